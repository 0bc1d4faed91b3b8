//! The conflict rule of sync, in one place for every side that applies it.
//!
//! When two sources changed the same path (or the same file) since the last
//! state they both had, the change that reached PostgreSQL first keeps the
//! path; the other is kept beside it as a conflict copy named as file
//! synchronizers name theirs, `<stem>.sync-conflict-<YYYYMMDD-HHMMSS>-<source
//! id prefix>[.<ext>]`, with a metadata key [`CONFLICT_KEY`] saying which path,
//! which source and when. Nothing is lost: the copy holds the losing side's
//! content and metadata.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The metadata key that marks a conflict copy (`nexus find nexus.conflict`
/// lists them); its value is a [`ConflictInfo`].
pub const CONFLICT_KEY: &str = "nexus.conflict";

/// How many characters of the losing source's id go into a copy's name.
pub const SOURCE_PREFIX_CHARS: usize = 8;

/// What a conflict copy records about its conflict: the value of
/// [`CONFLICT_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictInfo {
    /// The path both sides wrote; the copy's file lost it.
    pub path: String,
    /// The source whose changes met the conflict (its store id): of the
    /// push or change file that brought the losing file, or, when a file
    /// arriving in a change file took the path from the file that held it
    /// ([`keeps_path`]), of that change file (so that a store and
    /// PostgreSQL applying the same rows name the copy alike).
    pub source: String,
    /// When the losing change was made (the file's modification time).
    pub at: Timestamp,
    /// Why: `path` (two files at one path) or `content` (both changed one file).
    pub reason: ConflictReason,
}

/// Why a conflict copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictReason {
    /// Two different files became live at one path.
    Path,
    /// Both sides changed the same file.
    Content,
}

impl ConflictInfo {
    /// The metadata value (canonical JSON) of [`CONFLICT_KEY`].
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a ConflictInfo always serializes")
    }

    /// The copy's path: the file keeps its folder and its extension, and
    /// its name gains `.sync-conflict-<YYYYMMDD-HHMMSS>-<source prefix>`
    /// before the extension. `attempt` > 0 (when that name is taken too)
    /// adds `-<attempt>`. Deterministic, so that a retried push makes the
    /// same copy.
    pub fn copy_path(&self, attempt: u32) -> String {
        conflict_path(&self.path, self.at, &self.source, attempt)
    }

    /// The paths, from the first to before the second in byte order, that
    /// hold every copy path of this conflict (whatever the attempt): a
    /// side reads which of them its live files hold with one range query
    /// on its path index, then picks with [`ConflictInfo::free_copy_path`].
    pub fn copy_paths_range(&self) -> (String, String) {
        let (head, _) = copy_name(&self.path, self.at, &self.source);
        let to = crate::validate::prefix_upper_bound(&head).expect("a copy's name is never empty");
        (head, to)
    }

    /// The copy's path: the first of [`ConflictInfo::copy_path`]'s
    /// attempts (0, 1, 2, ...) that `taken` does not claim (a live file
    /// holds it, or a copy made before it in the same apply).
    pub fn free_copy_path(&self, taken: impl Fn(&str) -> bool) -> String {
        (0..)
            .map(|attempt| self.copy_path(attempt))
            .find(|copy| !taken(copy))
            .expect("a finite set of paths leaves an attempt free")
    }

    /// The summary's record of the copy made for this conflict: the file
    /// `path_id` of `tenant`, now at `copy`.
    pub fn into_copy(self, tenant: String, copy: String, path_id: String) -> ConflictCopy {
        ConflictCopy {
            tenant,
            path: self.path,
            copy,
            path_id,
            source: self.source,
            reason: self.reason,
        }
    }
}

/// A conflict copy that a sync made, as its summary reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictCopy {
    /// The tenant.
    pub tenant: String,
    /// The path both sides wrote (kept by the change that arrived first,
    /// or, through a change file, by the file made first: [`keeps_path`]).
    pub path: String,
    /// Where the other change was kept.
    pub copy: String,
    /// The copy's file id.
    pub path_id: String,
    /// The source the copy is named after ([`ConflictInfo::source`]).
    pub source: String,
    /// Why.
    pub reason: ConflictReason,
}

/// The conflict copy's path of `path` (see [`ConflictInfo::copy_path`]).
pub fn conflict_path(path: &str, at: Timestamp, source: &str, attempt: u32) -> String {
    let (head, ext) = copy_name(path, at, source);
    if attempt > 0 {
        format!("{head}-{attempt}{ext}")
    } else {
        format!("{head}{ext}")
    }
}

/// What every copy path of a conflict over `path` starts with (its folder,
/// its stem and `.sync-conflict-<YYYYMMDD-HHMMSS>-<source prefix>`), and
/// the extension that ends it.
fn copy_name<'a>(path: &'a str, at: Timestamp, source: &str) -> (String, &'a str) {
    let (dir, name) = match path.rfind('/') {
        Some(i) => path.split_at(i + 1),
        None => ("", path),
    };
    // The extension is what follows the last dot, unless the dot starts
    // the name (".bashrc" has none).
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    let prefix: String = source.chars().take(SOURCE_PREFIX_CHARS).collect();
    (
        format!("{dir}{stem}.sync-conflict-{}-{prefix}", compact_time(at)),
        ext,
    )
}

/// A file that wants a path, as [`keeps_path`] compares two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathClaim<'a> {
    /// When the file was made (microseconds since the epoch).
    pub created_at: i64,
    /// Its id (a UUID, hyphenated lower-case: ids compare as text alike on
    /// every side).
    pub id: &'a str,
}

/// Whether the live file that holds a path keeps it when an arriving file
/// (another file) wants it: by arrival (`Seen::Through`: a push or a sync
/// run, the holder arrived first); when nothing orders them (`Seen::Unknown`:
/// a change file, which may cross another store's), the file made first,
/// then the smaller id, so that two stores whose change files cross keep
/// the same file at the path (each keeping its own, both would then take
/// the other's move of it to a copy, and leave the path empty). The other
/// file becomes the conflict copy.
pub fn keeps_path(holder: PathClaim<'_>, arriving: PathClaim<'_>, seen: Seen) -> bool {
    match seen {
        Seen::Through(_) => true,
        Seen::Unknown => (holder.created_at, holder.id) <= (arriving.created_at, arriving.id),
    }
}

/// One side's row of a file that both sides changed: what the rule of
/// [`settle`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSide<'a> {
    /// Whether the file is live (not deleted) on this side.
    pub live: bool,
    /// Its current version number on this side.
    pub version: i64,
    /// Its path on this side.
    pub path: &'a str,
    /// When the row last changed (microseconds since the epoch): its
    /// deletion, else its last update. What decides between two rows of
    /// one version that a change file brings (see [`plan_file`]), and what
    /// a row merging two is stamped after ([`FileSide::merged_at`]).
    pub changed_at: i64,
}

impl FileSide<'_> {
    /// Whether this row is the later change than `other`'s (two rows of
    /// one version that nothing else orders): the later time, then the live
    /// row, then the greater path; a total order, so that two sides that
    /// each hold one of the rows pick the same one.
    pub fn later_than(&self, other: &FileSide<'_>) -> bool {
        (self.changed_at, self.live, self.path) > (other.changed_at, other.live, other.path)
    }

    /// The time of the row that merges this row and `other` (one side's
    /// row at the other's path: [`FilePlan::ApplyAt`], [`FilePlan::KeepAt`]):
    /// just after the later of the two, so that a side that holds either
    /// row takes the merged one as the later change; the same wherever the
    /// two are merged.
    pub fn merged_at(&self, other: &FileSide<'_>) -> i64 {
        self.changed_at.max(other.changed_at).saturating_add(1)
    }
}

/// How a file that both sides changed (since the last state they both had)
/// is settled, when its versions did not diverge (diverged versions make a
/// conflict copy instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled<'a> {
    /// The row this side already has stays (else the arriving row applies).
    pub keep_here: bool,
    /// The path the kept row takes: a rename by the side that lost applies
    /// to the file the winner's row keeps (renames follow the file's
    /// identity). `None`: the kept row's own path.
    pub path: Option<&'a str>,
}

/// The rule for one file both sides changed: the side with more versions
/// wins; on a tie a live row wins over a deletion (modify wins over
/// delete), else the row already here stays. The versions of the two
/// sides did not diverge, so one side's are a prefix of the other's: a
/// live side with more versions changed content the deleter never saw
/// (it stays), a deleter with more versions saw every version of the live
/// side, which only renamed it (the deletion stands; a live row there
/// would name a version older than the file's newest as current). A
/// rename by the losing side moves the winner's row. [`plan_file`] applies
/// it to a file that both sides changed ([`changed_unseen`]).
pub fn settle<'a>(arriving: FileSide<'a>, here: FileSide<'a>) -> Settled<'a> {
    let keep_here = match arriving.version.cmp(&here.version) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => here.live || !arriving.live,
    };
    let renamed = arriving.live && here.live && arriving.path != here.path;
    let path = match (renamed, keep_here) {
        (false, _) => None,
        (true, true) => Some(arriving.path),
        (true, false) => Some(here.path),
    };
    Settled { keep_here, path }
}

/// One side's state of a metadata key of a file: what [`key_arrives`]
/// compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySide<'a> {
    /// Its value (canonical JSON), or `None` when the key was removed.
    pub value: Option<&'a str>,
    /// When it was set or removed (microseconds since the epoch).
    pub at: i64,
}

impl KeySide<'_> {
    /// Whether this is the later change than `other`: the later time, then
    /// a value over a removal, then the greater value (a total order, as
    /// for files in [`FileSide::later_than`]).
    pub fn later_than(&self, other: &KeySide<'_>) -> bool {
        (self.at, self.value.is_some(), self.value) > (other.at, other.value.is_some(), other.value)
    }
}

/// Whether a change file's change to a metadata key (a value, or a removal)
/// applies over the key's state here (`None`: the key was never set here):
/// unless the change here is the later one. A change file says nothing of
/// what its writer had seen, so the later change wins, per key, and two
/// stores that exchange change files agree. (A push into PostgreSQL is
/// ordered by its arrival there: the later arrival wins.)
pub fn key_arrives(arriving: KeySide<'_>, here: Option<KeySide<'_>>) -> bool {
    here.is_none_or(|h| !h.later_than(&arriving))
}

/// How an arriving version meets another version that holds its number of
/// its file here: the one decision that an embedded import and PostgreSQL's
/// apply both make before they plan the files ([`meet_version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionMeeting {
    /// The version here moves to another file with the arriving rows (a
    /// conflict copy their writer made): it moves first and frees its
    /// number; the row here, whose current version it may be, is no row
    /// to settle with.
    Supersedes,
    /// The arriving version is here already, in another file (this side
    /// moved it to a conflict copy before): it stays there, and the
    /// arriving row of the file whose current version it is stays out.
    /// `with_other`: the arriving rows also move the version here to
    /// another file (this side met the same conflict and made its own copy,
    /// the other way round); it stays too, with the same consequence.
    Stays {
        /// The version here stays as well.
        with_other: bool,
    },
    /// Both sides made this version number of the file: the arriving file
    /// becomes a conflict copy with its new versions.
    Diverges,
}

/// The rule of [`VersionMeeting`], for an arriving version whose number of
/// its file another version holds here: `carried`, the arriving rows carry
/// that version (to another file); `known`, the arriving version is here
/// already (in another file).
pub fn meet_version(carried: bool, known: bool) -> VersionMeeting {
    match (carried, known) {
        (true, false) => VersionMeeting::Supersedes,
        (with_other, true) => VersionMeeting::Stays { with_other },
        (false, false) => VersionMeeting::Diverges,
    }
}

/// An arriving version whose number of its file another version holds
/// here: what [`meet_versions`] is given, read by each side in its own SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash<Id> {
    /// The arriving version.
    pub version: Id,
    /// Its file.
    pub file: Id,
    /// Its number.
    pub number: i64,
    /// The version here that holds that number of the file.
    pub here: Id,
    /// When each was made (microseconds): the arriving version, then the
    /// one here. Where both sides made new versions of a file and nothing
    /// orders their arrivals, the side whose first new version was made
    /// first keeps the file ([`Fork::arriving_first`]).
    pub made: (i64, i64),
}

/// Where the versions of a file that both sides gave new versions part:
/// the lowest number of the file at which each side holds a version of its
/// own ([`VersionsMet::forks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork<Id> {
    /// The version number.
    pub number: i64,
    /// The arriving side's version of that number.
    pub arriving: Id,
    /// This side's.
    pub here: Id,
    /// Whether the arriving side's was made first (the earlier time, then
    /// the smaller id): when nothing orders the two sides' arrivals (a
    /// change file), its side keeps the file and this side's versions from
    /// the fork on go to the conflict copy ([`FilePlan::CopyHere`]), so that
    /// two stores whose change files cross keep the same side in the file.
    pub arriving_first: bool,
}

impl<Id: std::fmt::Display> Fork<Id> {
    /// The conflict copy's file id: derived from the file and the losing
    /// side's version at the fork, so that every side that meets this
    /// conflict, either way round, makes the same copy.
    pub fn copy_id(&self, file: &Id) -> uuid::Uuid {
        let losing = match self.arriving_first {
            true => &self.here,
            false => &self.arriving,
        };
        copy_id(&file.to_string(), &losing.to_string())
    }
}

/// The id of the conflict copy of file `file` whose versions start with
/// `losing` (UUIDs as hyphenated lower-case text, as every side writes
/// them): a name-based UUID (version 5), the same wherever it is made.
pub fn copy_id(file: &str, losing: &str) -> uuid::Uuid {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6e65_7875_732d_636f_6e66_6c69_6374_0001);
    uuid::Uuid::new_v5(&NAMESPACE, format!("{file}/{losing}").as_bytes())
}

/// How the arriving versions met the versions here ([`meet_versions`]):
/// what an embedded import and PostgreSQL's apply take out of the arriving
/// rows before they plan the files ([`VersionsMet::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionsMet<Id: Eq + Hash> {
    /// Files both sides made new versions of: the arriving file becomes a
    /// conflict copy (or, when nothing orders arrivals and the arriving
    /// side's fork was made first, the file here: [`FilePlan::CopyHere`]).
    pub diverged: HashSet<Id>,
    /// Arriving versions that stay where this side has them: left out.
    pub staying: HashSet<Id>,
    /// (file, number) of a staying version: an arriving row of that file
    /// whose current version it is stays out (its content is here already).
    pub stale: HashSet<(Id, i64)>,
    /// (file, number) whose version here the arriving rows move to another
    /// file: the row here, whose current version it may be, is no row to
    /// settle with.
    pub superseded: HashSet<(Id, i64)>,
    /// The versions here that the arriving rows move: they move first, to
    /// free their numbers.
    pub vacating: HashSet<Id>,
    /// For a stale (file, number) where the arriving rows carry a version
    /// this side holds in another file (a copy their writer made its own
    /// way round): the (file, number) that holds it here.
    pub held_here: HashMap<(Id, i64), (Id, i64)>,
    /// Each diverged file's fork (among these rows' clashes).
    pub forks: HashMap<Id, Fork<Id>>,
}

impl<Id: Eq + Hash> Default for VersionsMet<Id> {
    fn default() -> Self {
        VersionsMet {
            diverged: HashSet::new(),
            staying: HashSet::new(),
            stale: HashSet::new(),
            superseded: HashSet::new(),
            vacating: HashSet::new(),
            held_here: HashMap::new(),
            forks: HashMap::new(),
        }
    }
}

/// The rule of [`meet_version`] over every clash of the arriving rows.
/// `carried`: the versions the arriving rows carry, each with its file and
/// number where the rows at hand hold it (`None`: carried by rows applied
/// separately, such as an earlier window of the same push); `known`: which
/// of the clashing arriving versions this side holds already (in any file).
pub fn meet_versions<Id: Clone + Ord + Hash>(
    clashes: &[Clash<Id>],
    carried: &HashMap<Id, Option<(Id, i64)>>,
    known: &HashSet<Id>,
) -> VersionsMet<Id> {
    let mut met = VersionsMet::default();
    for c in clashes {
        match meet_version(carried.contains_key(&c.here), known.contains(&c.version)) {
            VersionMeeting::Supersedes => {
                met.vacating.insert(c.here.clone());
                met.superseded.insert((c.file.clone(), c.number));
            }
            VersionMeeting::Stays { with_other } => {
                met.staying.insert(c.version.clone());
                met.stale.insert((c.file.clone(), c.number));
                if with_other {
                    met.staying.insert(c.here.clone());
                    if let Some(Some(at)) = carried.get(&c.here) {
                        met.stale.insert(at.clone());
                        met.held_here.insert(at.clone(), (c.file.clone(), c.number));
                    }
                }
            }
            VersionMeeting::Diverges => {
                met.diverged.insert(c.file.clone());
                let fork = Fork {
                    number: c.number,
                    arriving: c.version.clone(),
                    here: c.here.clone(),
                    arriving_first: (c.made.0, &c.version) < (c.made.1, &c.here),
                };
                match met.forks.get(&c.file) {
                    Some(f) if f.number <= c.number => {}
                    _ => {
                        met.forks.insert(c.file.clone(), fork);
                    }
                }
            }
        }
    }
    met
}

impl<Id: Clone + Eq + Hash> VersionsMet<Id> {
    /// Plans the arriving row of file `file` by [`plan_file`], against the
    /// row here unless the arriving rows supersede its current version;
    /// `None`: the row stays out (its current version stays where this
    /// side has it, see [`VersionsMet::stale`]). A diverged file whose
    /// arriving side made its first new version first, when nothing orders
    /// the arrivals ([`Seen::Unknown`]), is [`FilePlan::CopyHere`].
    pub fn plan<'a>(
        &self,
        file: &Id,
        arriving: FileSide<'a>,
        here: Option<HereRow<'a>>,
        source: &str,
        seen: Seen,
    ) -> Option<FilePlan> {
        if self.stale.contains(&(file.clone(), arriving.version)) {
            return None;
        }
        let here = here.filter(|h| !self.superseded.contains(&(file.clone(), h.file.version)));
        let diverged = self.diverged.contains(file);
        if diverged
            && seen == Seen::Unknown
            && self.forks.get(file).is_some_and(|f| f.arriving_first)
        {
            return Some(FilePlan::CopyHere);
        }
        Some(plan_file(arriving, here, diverged, source, seen))
    }
}

/// What the writer of arriving rows had seen of the side they arrive at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// It had pulled that side's changes through this position (a push of
    /// a store that pulls from the database it pushes to).
    Through(i64),
    /// Nothing says (a change file): version numbers tell, and between
    /// two rows of one version, their times ([`FileSide::later_than`]).
    Unknown,
}

/// The row already here of a file that rows arrive for: what
/// [`changed_unseen`] and [`plan_file`] look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HereRow<'a> {
    /// Its position in this side's change sequence.
    pub change_seq: i64,
    /// The store whose change it is, when another store wrote it.
    pub origin: Option<&'a str>,
    /// The file as this row has it.
    pub file: FileSide<'a>,
}

/// Whether the row here of a file holds a change that the arriving row's
/// writer (`source`) had not seen: then the two settle by [`settle`];
/// otherwise the arriving row replaces it (a fast-forward). With a
/// position, a change after it by another writer is unseen; without one,
/// versions the arriving row lacks are (a deletion or a rename there then
/// meets a new version here). One rule for every side that applies rows.
pub fn changed_unseen(here: &HereRow<'_>, arriving_version: i64, source: &str, seen: Seen) -> bool {
    match seen {
        Seen::Through(base) => here.change_seq > base && here.origin != Some(source),
        Seen::Unknown => here.file.version > arriving_version,
    }
}

/// What becomes of an arriving row of a file: the one decision that the
/// import of a change file into an embedded store and the apply of a push
/// or change file into PostgreSQL both make, each then carrying it out in
/// its own SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilePlan {
    /// The arriving row applies as it is: a file new here, a row its
    /// writer had seen here (a fast-forward), or the winner by [`settle`].
    Apply,
    /// The arriving row wins at the path the row here has: the change here
    /// was a rename, which follows the file.
    ApplyAt(String),
    /// The row here stays as it is.
    Keep,
    /// The row here stays, at the arriving row's path (the arriving change
    /// was a rename).
    KeepAt(String),
    /// Both sides made new versions of the file (`diverged`): the arriving
    /// file becomes a new file, a conflict copy beside the one here, with
    /// its new versions and its metadata; the file here keeps its row.
    Copy,
    /// Both sides made new versions of the file, and nothing orders their
    /// arrivals but the arriving side made its first one first
    /// ([`Fork::arriving_first`]): the reverse of [`FilePlan::Copy`]. The
    /// file here becomes the conflict copy, with its versions from the fork
    /// on and a copy of its metadata, and the arriving row applies.
    CopyHere,
}

/// Plans an arriving row of a file (`arriving`, from `source`, which had
/// seen `seen` of this side) against the row here, if any. `diverged`:
/// a version number of the file that the arriving rows use is held here
/// by a version they do not carry.
pub fn plan_file<'a>(
    arriving: FileSide<'a>,
    here: Option<HereRow<'a>>,
    diverged: bool,
    source: &str,
    seen: Seen,
) -> FilePlan {
    if diverged {
        return FilePlan::Copy;
    }
    let Some(here) = here else {
        return FilePlan::Apply;
    };
    if seen == Seen::Unknown && here.file.version == arriving.version {
        // A change file's row of the version here: nothing says whether
        // its writer saw this row's change (a rename, a deletion) or made
        // its own beside it. The later change wins, whole; each side of an
        // exchange of change files picks the same row, so they agree.
        return match here.file.later_than(&arriving) {
            true => FilePlan::Keep,
            false => FilePlan::Apply,
        };
    }
    if !changed_unseen(&here, arriving.version, source, seen) {
        return FilePlan::Apply;
    }
    let settled = settle(arriving, here.file);
    match (settled.keep_here, settled.path) {
        (false, None) => FilePlan::Apply,
        (false, Some(p)) => FilePlan::ApplyAt(p.to_string()),
        (true, None) => FilePlan::Keep,
        (true, Some(p)) => FilePlan::KeepAt(p.to_string()),
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn compact_time(at: Timestamp) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.as_micros()) * 1000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| "00000000-000000".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Timestamp {
        Timestamp::parse("2026-12-01T07:05:09.5Z").unwrap()
    }

    #[test]
    fn unseen_changes_by_position_or_by_versions() {
        let here = |change_seq, origin, version| HereRow {
            change_seq,
            origin,
            file: FileSide {
                live: true,
                version,
                path: "/a",
                changed_at: 0,
            },
        };
        // With a position: another writer's change after it is unseen; the
        // pusher's own change, or one it had pulled, is not.
        let through = Seen::Through(10);
        assert!(changed_unseen(&here(11, Some("b"), 1), 1, "a", through));
        assert!(changed_unseen(&here(11, None, 1), 5, "a", through));
        assert!(!changed_unseen(&here(11, Some("a"), 3), 1, "a", through));
        assert!(!changed_unseen(&here(10, Some("b"), 3), 1, "a", through));
        // Without one (a change file): versions the arriving row lacks.
        assert!(changed_unseen(
            &here(0, Some("a"), 3),
            2,
            "a",
            Seen::Unknown
        ));
        assert!(!changed_unseen(
            &here(99, Some("b"), 2),
            2,
            "a",
            Seen::Unknown
        ));
    }

    #[test]
    fn a_plan_for_every_arriving_row() {
        let side = |live, version, path| FileSide {
            live,
            version,
            path,
            changed_at: 0,
        };
        let here = |change_seq, file| HereRow {
            change_seq,
            origin: Some("b"),
            file,
        };
        let through = Seen::Through(10);
        let plan = |arriving, h, diverged| plan_file(arriving, h, diverged, "a", through);
        // Divergence decides first, whatever the rows.
        let h = Some(here(11, side(true, 2, "/a")));
        assert_eq!(plan(side(true, 9, "/a"), h, true), FilePlan::Copy);
        assert_eq!(plan(side(true, 1, "/a"), None, true), FilePlan::Copy);
        // A file new here, or a row its writer had seen: applies.
        assert_eq!(plan(side(true, 1, "/a"), None, false), FilePlan::Apply);
        let seen = Some(here(10, side(true, 7, "/elsewhere")));
        assert_eq!(plan(side(false, 1, "/a"), seen, false), FilePlan::Apply);
        // Unseen: by settle. Modify wins over delete, either way; a
        // deletion that saw every version wins over a rename.
        let h = Some(here(11, side(true, 5, "/a")));
        assert_eq!(plan(side(false, 2, "/a"), h, false), FilePlan::Keep);
        let h = Some(here(11, side(false, 2, "/a")));
        assert_eq!(plan(side(true, 4, "/a"), h, false), FilePlan::Apply);
        let h = Some(here(11, side(false, 2, "/a")));
        assert_eq!(plan(side(true, 1, "/b"), h, false), FilePlan::Keep);
        // Renames follow the file, whichever row wins.
        let h = Some(here(11, side(true, 2, "/a")));
        assert_eq!(
            plan(side(true, 1, "/moved"), h, false),
            FilePlan::KeepAt("/moved".into())
        );
        let h = Some(here(11, side(true, 2, "/moved")));
        assert_eq!(
            plan(side(true, 3, "/a"), h, false),
            FilePlan::ApplyAt("/moved".into())
        );
        // A change file (no position): a row with more versions applies
        // (a fast-forward); one with fewer meets the versions it lacks.
        let unknown = |arriving, h| plan_file(arriving, Some(h), false, "a", Seen::Unknown);
        assert_eq!(
            unknown(side(true, 3, "/a"), here(99, side(true, 2, "/moved"))),
            FilePlan::Apply
        );
        assert_eq!(
            unknown(side(false, 1, "/a"), here(99, side(true, 2, "/a"))),
            FilePlan::Keep
        );
        // Of one version, the later change wins whole, whichever side
        // holds it: a rename or a deletion, either way.
        let at = |f: FileSide<'static>, changed_at| FileSide { changed_at, ..f };
        let (renamed, deleted) = (at(side(true, 2, "/b"), 20), at(side(false, 2, "/a"), 10));
        assert_eq!(unknown(renamed, here(1, deleted)), FilePlan::Apply);
        assert_eq!(unknown(deleted, here(1, renamed)), FilePlan::Keep);
        let (renamed, deleted) = (at(side(true, 2, "/b"), 10), at(side(false, 2, "/a"), 20));
        assert_eq!(unknown(renamed, here(1, deleted)), FilePlan::Keep);
        assert_eq!(unknown(deleted, here(1, renamed)), FilePlan::Apply);
        // At one instant: the live row, then the greater path.
        let (x, y) = (at(side(true, 2, "/x"), 5), at(side(true, 2, "/y"), 5));
        assert_eq!(unknown(y, here(1, x)), FilePlan::Apply);
        assert_eq!(unknown(x, here(1, y)), FilePlan::Keep);
        let gone = at(side(false, 2, "/z"), 5);
        assert_eq!(unknown(gone, here(1, x)), FilePlan::Keep);
        assert_eq!(unknown(x, here(1, gone)), FilePlan::Apply);
    }

    #[test]
    fn settling_keeps_the_live_side_then_the_longer_history() {
        let side = |live, version, path| FileSide {
            live,
            version,
            path,
            changed_at: 0,
        };
        // Modify (a version the deleter never saw) wins over delete,
        // whichever side deleted; so does a tie.
        let s = settle(side(false, 2, "/a"), side(true, 5, "/a"));
        assert_eq!((s.keep_here, s.path), (true, None));
        let s = settle(side(true, 4, "/a"), side(false, 1, "/a"));
        assert_eq!((s.keep_here, s.path), (false, None));
        assert!(settle(side(false, 2, "/a"), side(true, 2, "/b")).keep_here);
        assert!(!settle(side(true, 2, "/b"), side(false, 2, "/a")).keep_here);
        // A deletion after every version of the live side (which only
        // renamed it) stands: the live row would name an older version as
        // the file's current one.
        let s = settle(side(false, 5, "/a"), side(true, 2, "/b"));
        assert_eq!((s.keep_here, s.path), (false, None));
        let s = settle(side(true, 1, "/b"), side(false, 4, "/a"));
        assert_eq!((s.keep_here, s.path), (true, None));
        // Both live: more versions win, a tie keeps what is here.
        assert!(!settle(side(true, 3, "/a"), side(true, 2, "/a")).keep_here);
        assert!(settle(side(true, 2, "/a"), side(true, 2, "/a")).keep_here);
        // The loser's rename moves the winner's row.
        let s = settle(side(true, 1, "/moved"), side(true, 2, "/a"));
        assert_eq!((s.keep_here, s.path), (true, Some("/moved")));
        let s = settle(side(true, 3, "/a"), side(true, 2, "/moved"));
        assert_eq!((s.keep_here, s.path), (false, Some("/moved")));
        // Both deleted: nothing to move.
        assert_eq!(
            settle(side(false, 1, "/x"), side(false, 2, "/y")).path,
            None
        );
    }

    #[test]
    fn the_file_made_first_keeps_a_path_when_nothing_orders_arrivals() {
        let (old, new) = (
            PathClaim {
                created_at: 10,
                id: "bbbb",
            },
            PathClaim {
                created_at: 20,
                id: "aaaa",
            },
        );
        // By arrival: the holder keeps it, whichever was made first.
        assert!(keeps_path(new, old, Seen::Through(0)));
        assert!(keeps_path(old, new, Seen::Through(0)));
        // Change files: the file made first, on either side.
        assert!(keeps_path(old, new, Seen::Unknown));
        assert!(!keeps_path(new, old, Seen::Unknown));
        // Made at one instant: the smaller id.
        let twin = PathClaim {
            created_at: 10,
            id: "aaaa",
        };
        assert!(!keeps_path(old, twin, Seen::Unknown));
        assert!(keeps_path(twin, old, Seen::Unknown));
    }

    #[test]
    fn versions_meet_versions() {
        use VersionMeeting::*;
        assert_eq!(meet_version(true, false), Supersedes);
        assert_eq!(meet_version(false, true), Stays { with_other: false });
        assert_eq!(meet_version(true, true), Stays { with_other: true });
        assert_eq!(meet_version(false, false), Diverges);
    }

    #[test]
    fn the_later_change_to_a_key_arrives() {
        let key = |value, at| KeySide { value, at };
        assert!(key_arrives(key(Some("1"), 5), None));
        assert!(key_arrives(key(Some("1"), 5), Some(key(Some("2"), 4))));
        assert!(!key_arrives(key(Some("1"), 5), Some(key(Some("2"), 6))));
        assert!(key_arrives(key(None, 5), Some(key(Some("2"), 4))));
        assert!(!key_arrives(key(None, 5), Some(key(Some("2"), 6))));
        assert!(key_arrives(key(Some("1"), 5), Some(key(None, 4))));
        // One instant: a value over a removal, then the greater value; the
        // same state applies again (nothing changes).
        assert!(!key_arrives(key(None, 5), Some(key(Some("2"), 5))));
        assert!(key_arrives(key(Some("2"), 5), Some(key(None, 5))));
        assert!(key_arrives(key(Some("3"), 5), Some(key(Some("2"), 5))));
        assert!(!key_arrives(key(Some("1"), 5), Some(key(Some("2"), 5))));
        assert!(key_arrives(key(Some("2"), 5), Some(key(Some("2"), 5))));
    }

    #[test]
    fn copy_names_keep_folder_and_extension() {
        let src = "0123456789abcdef";
        assert_eq!(
            conflict_path("/docs/report.txt", at(), src, 0),
            "/docs/report.sync-conflict-20261201-070509-01234567.txt"
        );
        assert_eq!(
            conflict_path("/a.tar.gz", at(), src, 0),
            "/a.tar.sync-conflict-20261201-070509-01234567.gz"
        );
        assert_eq!(
            conflict_path("/home/.bashrc", at(), src, 0),
            "/home/.bashrc.sync-conflict-20261201-070509-01234567"
        );
        assert_eq!(
            conflict_path("/v1.2/README", at(), src, 2),
            "/v1.2/README.sync-conflict-20261201-070509-01234567-2"
        );
    }

    #[test]
    fn a_copy_takes_the_first_free_name_within_its_range() {
        let info = ConflictInfo {
            path: "/docs/report.txt".into(),
            source: "0123456789abcdef".into(),
            at: at(),
            reason: ConflictReason::Path,
        };
        let taken = [info.copy_path(0), info.copy_path(1), info.copy_path(3)];
        assert_eq!(
            info.free_copy_path(|p| taken.iter().any(|t| t == p)),
            info.copy_path(2)
        );
        assert_eq!(info.free_copy_path(|_| false), info.copy_path(0));
        // Every attempt lies in the range; another source's or another
        // instant's copies of the path, and the path itself, do not.
        let (from, to) = info.copy_paths_range();
        let within = |p: &str| from.as_str() <= p && p < to.as_str();
        for attempt in [0, 1, 2, 10, 99] {
            assert!(within(&info.copy_path(attempt)), "{attempt}");
        }
        let other_source = conflict_path(&info.path, at(), "01234568ffff", 0);
        let other_time = conflict_path(&info.path, Timestamp::from_micros(0), &info.source, 0);
        for p in [
            other_source.as_str(),
            other_time.as_str(),
            "/docs/report.txt",
            "/docs/report.sync-conflict-",
        ] {
            assert!(!within(p), "{p}");
        }
    }

    #[test]
    fn versions_meet_by_what_is_carried_and_known() {
        let clash = |version: &'static str, file: &'static str, number, here: &'static str| Clash {
            version,
            file,
            number,
            here,
            // Each version here made first.
            made: (1, 0),
        };
        // Arriving: f1 v2 "a2" (its v2 here is "h2", not carried: both
        // sides made v2, diverged); f2 v3 "b3" over "h3" that the rows
        // carry to a copy "c" at number 1 (supersedes); f3 v4 "k4" that
        // this side holds already (stays), over "m" that the rows carry to
        // "g" at number 7 (stays too, with its file's row there).
        let carried: HashMap<&str, Option<(&str, i64)>> = [
            ("a2", Some(("f1", 2))),
            ("b3", Some(("f2", 3))),
            ("h3", Some(("c", 1))),
            ("k4", Some(("f3", 4))),
            ("m", Some(("g", 7))),
            ("w", None),
        ]
        .into_iter()
        .collect();
        let known: HashSet<&str> = ["k4"].into_iter().collect();
        let clashes = [
            clash("a2", "f1", 2, "h2"),
            clash("b3", "f2", 3, "h3"),
            clash("k4", "f3", 4, "m"),
        ];
        let met = meet_versions(&clashes, &carried, &known);
        assert_eq!(met.diverged, ["f1"].into_iter().collect());
        assert_eq!(met.superseded, [("f2", 3)].into_iter().collect());
        assert_eq!(met.vacating, ["h3"].into_iter().collect());
        assert_eq!(met.staying, ["k4", "m"].into_iter().collect());
        assert_eq!(met.stale, [("f3", 4), ("g", 7)].into_iter().collect());
        // A clash with a version carried by rows applied separately (an
        // earlier window) supersedes too, with no file row to leave out.
        let met = meet_versions(&[clash("b3", "f2", 3, "w")], &carried, &HashSet::new());
        assert_eq!(met.vacating, ["w"].into_iter().collect());
        assert!(met.stale.is_empty() && met.diverged.is_empty());

        let side = |version, path| FileSide {
            live: true,
            version,
            path,
            changed_at: 0,
        };
        let here = |version, path| HereRow {
            change_seq: 1,
            origin: None,
            file: side(version, path),
        };
        let met = meet_versions(&clashes, &carried, &known);
        let plan = |file, arriving, h| met.plan(&file, arriving, h, "s", Seen::Unknown);
        assert_eq!(
            plan("f1", side(2, "/a"), Some(here(2, "/a"))),
            Some(FilePlan::Copy)
        );
        assert_eq!(plan("f3", side(4, "/x"), Some(here(3, "/x"))), None);
        assert_eq!(plan("g", side(7, "/y"), None), None);
        // The row here of f2 names the superseded version 3: no row to
        // settle with, so the arriving row applies (it would lose to a
        // later rename here otherwise).
        let mut later = here(3, "/renamed");
        later.file.changed_at = 9;
        assert_eq!(
            plan("f2", side(3, "/b"), Some(later)),
            Some(FilePlan::Apply)
        );
        assert_eq!(plan("f9", side(3, "/b"), Some(later)), Some(FilePlan::Keep));
    }

    #[test]
    fn the_side_whose_fork_was_made_first_keeps_a_file_when_nothing_orders_arrivals() {
        let clash = |version: &'static str, number, here: &'static str, made| Clash {
            version,
            file: "f",
            number,
            here,
            made,
        };
        let carried: HashMap<&str, Option<(&str, i64)>> =
            [("a2", Some(("f", 2))), ("a3", Some(("f", 3)))]
                .into_iter()
                .collect();
        let fork_of = |clashes: &[Clash<&'static str>]| {
            let met = meet_versions(clashes, &carried, &HashSet::new());
            met.forks.get("f").cloned().expect("a fork")
        };
        // The fork is the lowest diverging number, whatever the order of
        // the clashes; the arriving side's version there was made first.
        let fork = fork_of(&[
            clash("a3", 3, "h3", (1, 100)),
            clash("a2", 2, "h2", (10, 20)),
        ]);
        assert_eq!(
            fork,
            Fork {
                number: 2,
                arriving: "a2",
                here: "h2",
                arriving_first: true
            }
        );
        // Made later, or at one instant with the greater id: not first.
        assert!(!fork_of(&[clash("a2", 2, "h2", (30, 20))]).arriving_first);
        assert!(!fork_of(&[clash("a2", 2, "a1", (20, 20))]).arriving_first);
        assert!(fork_of(&[clash("a2", 2, "h2", (20, 20))]).arriving_first);

        // Seen from the other side, the same fork names the same copy:
        // derived from the file and the losing side's version.
        let other_way = Fork {
            number: 2,
            arriving: "h2",
            here: "a2",
            arriving_first: false,
        };
        assert_eq!(fork.copy_id(&"f"), other_way.copy_id(&"f"));
        assert_eq!(fork.copy_id(&"f"), copy_id("f", "h2"));
        assert_ne!(copy_id("f", "h2"), copy_id("f", "a2"));
        assert_ne!(copy_id("f", "h2"), copy_id("g", "h2"));
        assert_eq!(copy_id("f", "h2").get_version_num(), 5);

        // Only a change file (no order of arrivals) lets the arriving side
        // keep the file; a push keeps the rule of arrival.
        let met = meet_versions(&[clash("a2", 2, "h2", (10, 20))], &carried, &HashSet::new());
        let side = FileSide {
            live: true,
            version: 2,
            path: "/f",
            changed_at: 0,
        };
        let here = HereRow {
            change_seq: 1,
            origin: None,
            file: side,
        };
        let plan = |seen| met.plan(&"f", side, Some(here), "s", seen);
        assert_eq!(plan(Seen::Unknown), Some(FilePlan::CopyHere));
        assert_eq!(plan(Seen::Through(0)), Some(FilePlan::Copy));
        let met = meet_versions(&[clash("a2", 2, "h2", (30, 20))], &carried, &HashSet::new());
        assert_eq!(
            met.plan(&"f", side, Some(here), "s", Seen::Unknown),
            Some(FilePlan::Copy)
        );
    }

    #[test]
    fn info_round_trips_as_metadata() {
        let info = ConflictInfo {
            path: "/x".into(),
            source: "abc".into(),
            at: at(),
            reason: ConflictReason::Path,
        };
        let v = info.to_json();
        assert_eq!(v["reason"], "path");
        assert_eq!(v["path"], "/x");
        let back: ConflictInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, info);
    }
}

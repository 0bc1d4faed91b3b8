//! What becomes of rows that arrive from another side (a change file, a
//! push): one algorithm that an embedded store's import and PostgreSQL's
//! apply both run over the rows as each holds them (this store's
//! [`crate::Changes`] rows; PostgreSQL's converted rows), after reading in
//! its own SQL what is here. The decisions are the conflict rule's
//! ([`crate::meet_versions`], [`crate::VersionsMet::plan`]); each side then
//! carries them out with its own writes.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use crate::changes::{FileRow, HIDDEN, MetadataRow, TombstoneRow, VersionRow};
use crate::conflict::{Clash, FilePlan, FileSide, HereRow, KeySide, Seen, VersionsMet};

/// An arriving row that belongs to a file (a file's row, a version, a
/// metadata row), as a side holds it.
pub trait OfFile {
    /// How the side names a file.
    type Id: Clone + Ord + Hash;
    /// The file the row belongs to.
    fn file(&self) -> &Self::Id;
    /// Makes the row another file's (a conflict copy's).
    fn move_to(&mut self, file: &Self::Id);
}

/// An arriving row of a file.
pub trait ArrivingFile: OfFile {
    /// The file as the row has it, for the rule.
    fn side(&self) -> FileSide<'_>;
    /// Gives the row the path here (a rename here follows the file) and
    /// the merged row's time `at` ([`FileSide::merged_at`]; the row is
    /// live).
    fn merge_at(&mut self, path: String, at: i64);
    /// Makes the row a deletion of the file at `at` (a redundant copy:
    /// see [`Decided::retired`]).
    fn retire(&mut self, at: i64);
}

/// An arriving version.
pub trait ArrivingVersion: OfFile {
    /// The version's id.
    fn id(&self) -> &Self::Id;
    /// Its number of its file.
    fn number(&self) -> i64;
}

/// An arriving change to a metadata key (a value, or a removal), as a side
/// holds it.
pub trait KeyChange<Id> {
    /// The file, the key and the change; `None` for a row that changes no
    /// metadata key (a removal of a chunk).
    fn key_change(&self) -> Option<(&Id, &str, KeySide<'_>)>;
}

/// What [`decide`] decided for the arriving file rows, for each side to
/// carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided<Id: Eq + Hash> {
    /// Files whose arriving rows go to a new file, a conflict copy beside
    /// the file here: (the file, its copy). The copy's row is among the
    /// arriving rows, still at the file's path: each side gives it its
    /// copy's name.
    pub copies: Vec<(Id, Id)>,
    /// Files that keep their row here, at the arriving row's path (the
    /// arriving change was a rename), stamped with the merged row's time
    /// ([`FileSide::merged_at`]).
    pub moves: Vec<(Id, String, i64)>,
    /// Files whose arriving row won and took the path here (the change
    /// here was a rename).
    pub renamed: Vec<Id>,
    /// Files whose row here becomes a conflict copy while the arriving row
    /// applies ([`FilePlan::CopyHere`]): (the file, its copy, the version
    /// number from which this side's versions of the file go to the copy).
    /// Each side copies the file's row and metadata here to the copy and
    /// moves those versions, before the arriving rows are written.
    pub displaced: Vec<(Id, Id, i64)>,
    /// Files whose arriving row stays out: the row here stays (or moves,
    /// see `moves`), or the row's current version stays where this side
    /// has it.
    pub dropped: HashSet<Id>,
    /// Files this side does not have whose current version it holds as the
    /// current version of a live file that the arriving rows leave as it is:
    /// a conflict copy that the arriving side made its own way round, of
    /// content this side keeps elsewhere. Their arriving row
    /// becomes a deletion of the file, stamped just after it, for the hub
    /// (PostgreSQL) to write as its own change, which every store that
    /// pulls takes along with the file that holds the content; a side whose
    /// changes travel on to stores that may hold nothing else (an embedded
    /// import) leaves the row out, as a stale one.
    pub retired: Vec<Id>,
    /// Files whose arriving rows went to another file here, which holds
    /// the line their versions continue ([`follow`]): (the file, the file
    /// its rows went to). A side whose changes reach the rows' writer only
    /// by its pulls marks both as its own change.
    pub followed: Vec<(Id, Id)>,
}

/// Plans every arriving file row by [`VersionsMet::plan`] against its row
/// here (`here`), and carries the plan out on the rows: a row that stays
/// out is removed, one that wins at the path here takes it, one whose
/// file diverged becomes a new file with the arriving versions
/// this side lacks (`known`: the ones it holds, in any file, stay where
/// they are) and a copy of the file's arriving metadata rows (which apply
/// to the file too). `source` and `seen`: the rows' writer and what it had
/// seen of this side. A copy's id is `copy_id(Some((file, its fork)))`
/// when nothing orders arrivals ([`Seen::Unknown`]: every side makes the
/// same copy, [`crate::Fork::copy_id`]), else `copy_id(None)` (a new id).
/// The rows of a file in `followed` go to the file it names first.
#[allow(clippy::too_many_arguments)]
pub fn decide<'h, F, V, M>(
    files: &mut Vec<F>,
    versions: &mut [V],
    metadata: &mut Vec<M>,
    met: &VersionsMet<F::Id>,
    followed: &HashMap<F::Id, F::Id>,
    here: impl Fn(&F::Id) -> Option<HereRow<'h>>,
    known: &HashSet<F::Id>,
    mut copy_id: impl FnMut(Option<(&F::Id, &crate::Fork<F::Id>)>) -> F::Id,
    source: &str,
    seen: Seen,
) -> Decided<F::Id>
where
    F: ArrivingFile,
    V: ArrivingVersion<Id = F::Id>,
    M: OfFile<Id = F::Id> + Clone,
{
    // Each arriving file row's version number: whether the rows move a
    // file on (see `retired`).
    let arriving: HashMap<F::Id, i64> = files
        .iter()
        .map(|f| (f.file().clone(), f.side().version))
        .collect();
    // A stale arriving file that this side does not have, whose current
    // version this side holds as the current version of a live file that
    // the arriving rows leave where it is: a redundant copy.
    let redundant = |id: &F::Id, version: i64| {
        met.held_here
            .get(&(id.clone(), version))
            .is_some_and(|(holder, n)| {
                here(holder).is_some_and(|h| h.file.live && h.file.version == *n)
                    && arriving.get(holder).is_none_or(|v| v <= n)
            })
    };
    let mut out = Decided {
        copies: Vec::new(),
        moves: Vec::new(),
        renamed: Vec::new(),
        displaced: Vec::new(),
        dropped: HashSet::new(),
        retired: Vec::new(),
        followed: followed
            .iter()
            .map(|(f, g)| (f.clone(), g.clone()))
            .collect(),
    };
    // Copies of diverged files: named after the fork when nothing orders
    // arrivals, so that every side makes the same one.
    let fork = |id: &F::Id| match seen {
        Seen::Unknown => met.forks.get(id),
        Seen::Through(_) => None,
    };
    for f in files.iter_mut() {
        if let Some(to) = followed.get(f.file()) {
            // A file whose arriving versions continue a line this side
            // keeps in another file: its row goes there, at that file's
            // path here (the copy's name), stamped after both.
            f.move_to(to);
            if let Some(h) = here(to).filter(|_| f.side().live) {
                let at = f.side().merged_at(&h.file);
                f.merge_at(h.file.path.to_string(), at);
            }
        }
        let id = f.file().clone();
        let h = here(&id);
        // A row that merges the two (one's row, the other's path).
        let merged_at = h.map_or(i64::MIN, |h| f.side().merged_at(&h.file));
        match met.plan(&id, f.side(), h, source, seen) {
            None if h.is_none() && f.side().live && redundant(&id, f.side().version) => {
                let at = f.side().changed_at.saturating_add(1);
                f.retire(at);
                out.retired.push(id);
            }
            None | Some(FilePlan::Keep) => {
                out.dropped.insert(id);
            }
            Some(FilePlan::Apply) => {}
            Some(FilePlan::ApplyAt(path)) => {
                f.merge_at(path, merged_at);
                out.renamed.push(id);
            }
            Some(FilePlan::KeepAt(path)) => {
                out.dropped.insert(id.clone());
                out.moves.push((id, path, merged_at));
            }
            Some(FilePlan::Copy) => {
                let copy = copy_id(fork(&id).map(|f| (&id, f)));
                f.move_to(&copy);
                out.copies.push((id, copy));
            }
            Some(FilePlan::CopyHere) => {
                let f = fork(&id).expect("a file copied here has a fork");
                let copy = copy_id(Some((&id, f)));
                out.displaced.push((id, copy, f.number));
            }
        }
    }
    if !out.dropped.is_empty() {
        files.retain(|f| !out.dropped.contains(f.file()));
    }
    let moved: HashMap<F::Id, F::Id> = out.copies.iter().cloned().chain(followed.clone()).collect();
    to_copies(&moved, versions, known, metadata);
    out
}

/// The arriving rows of files that became conflict copies (`moved`: file
/// to copy) go with them: each version this side lacks (`known`: the ones
/// it holds stay where they are), and a copy of each metadata row.
pub fn to_copies<Id, V, M>(
    moved: &HashMap<Id, Id>,
    versions: &mut [V],
    known: &HashSet<Id>,
    metadata: &mut Vec<M>,
) where
    Id: Clone + Eq + Hash,
    V: ArrivingVersion<Id = Id>,
    M: OfFile<Id = Id> + Clone,
{
    if moved.is_empty() {
        return;
    }
    for v in versions.iter_mut() {
        if let Some(to) = moved.get(v.file())
            && !known.contains(v.id())
        {
            let to = to.clone();
            v.move_to(&to);
        }
    }
    let extra = moved_rows(metadata, moved);
    metadata.extend(extra);
}

/// Copies of the rows of the files that `moved` names, each made the row
/// of the file it maps to.
fn moved_rows<R: OfFile + Clone>(rows: &[R], moved: &HashMap<R::Id, R::Id>) -> Vec<R> {
    rows.iter()
        .filter_map(|r| {
            moved.get(r.file()).map(|to| {
                let mut r = r.clone();
                r.move_to(to);
                r
            })
        })
        .collect()
}

/// A file's row here, as a side reads it for [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HereFile {
    /// Its position in this side's change sequence.
    pub change_seq: i64,
    /// The store whose change it is, when another store wrote it.
    pub origin: Option<String>,
    /// Whether the file is live (a file hidden until its path is free is).
    pub live: bool,
    /// Its current version number.
    pub version: i64,
    /// Its path.
    pub path: String,
    /// Its deletion time, else its last update (microseconds).
    pub changed_at: i64,
}

impl HereFile {
    fn row(&self) -> HereRow<'_> {
        HereRow {
            change_seq: self.change_seq,
            origin: self.origin.as_deref(),
            file: FileSide {
                live: self.live,
                version: self.version,
                path: &self.path,
                changed_at: self.changed_at,
            },
        }
    }
}

/// What a side reads for [`resolve`], in its own SQL, and how it holds the
/// arriving rows: the small interface each dialect implements.
// Static dispatch only; an embedded store's reads complete at once.
#[allow(async_fn_in_trait)]
pub trait ApplySide {
    /// How the side names files and versions.
    type Id: Clone + Ord + Hash + std::fmt::Display;
    /// An arriving file row.
    type File: ArrivingFile<Id = Self::Id>;
    /// An arriving version.
    type Version: ArrivingVersion<Id = Self::Id> + Clone;
    /// An arriving metadata row.
    type Metadata: OfFile<Id = Self::Id> + KeyChange<Self::Id> + Clone;
    /// An arriving removal.
    type Removal: KeyChange<Self::Id>;
    /// The side's errors.
    type Error;

    /// The rows here of the files `ids` (read first: a side that locks
    /// rows locks them here).
    async fn files_here(
        &mut self,
        ids: &[Self::Id],
    ) -> Result<HashMap<Self::Id, HereFile>, Self::Error>;
    /// The arriving versions whose number of their file another version
    /// holds here.
    async fn clashes(
        &mut self,
        versions: &[Self::Version],
    ) -> Result<Vec<Clash<Self::Id>>, Self::Error>;
    /// Which of the versions `ids` this side holds (in any file).
    async fn known(&mut self, ids: &[Self::Id]) -> Result<HashSet<Self::Id>, Self::Error>;
    /// The arriving versions that this side holds in another file than the
    /// one they arrive in: each with the (file, number) that holds it here.
    async fn held_elsewhere(
        &mut self,
        versions: &[Self::Version],
    ) -> Result<Vec<(Self::Id, (Self::Id, i64))>, Self::Error>;
    /// The reads every [`resolve`] starts with, which depend on nothing
    /// read before: [`ApplySide::files_here`] of `ids`, then
    /// [`ApplySide::clashes`] and [`ApplySide::held_elsewhere`] of
    /// `versions`, in that order (none of a list that is empty). A side
    /// whose reads cross a network sends them together.
    async fn first_reads(
        &mut self,
        ids: &[Self::Id],
        versions: &[Self::Version],
    ) -> Result<FirstReads<Self::Id>, Self::Error> {
        let here = match ids.is_empty() {
            true => HashMap::new(),
            false => self.files_here(ids).await?,
        };
        if versions.is_empty() {
            return Ok(FirstReads {
                here,
                ..FirstReads::default()
            });
        }
        let clashes = self.clashes(versions).await?;
        let held_elsewhere = self.held_elsewhere(versions).await?;
        Ok(FirstReads {
            here,
            clashes,
            held_elsewhere,
        })
    }
    /// The arriving versions whose parent this side holds in another file
    /// than the one they arrive in, while that one holds a version here of
    /// the lowest number that the parent's file holds (the two lines forked
    /// there; a conflict copy's first version, whose parent is in the file
    /// it was copied from, is none: a copy holds no version of its file's
    /// first number): each as (the version, its parent, the file that
    /// holds the parent here).
    async fn parents_elsewhere(
        &mut self,
        versions: &[Self::Version],
    ) -> Result<Vec<(Self::Id, Self::Id, Self::Id)>, Self::Error>;
    /// Whether this side pulls from a PostgreSQL database (a hub): then
    /// the hub, where one side arrives first, settles content conflicts,
    /// and this side's import keeps its own file where both sides made new
    /// versions ([`FilePlan::Copy`], never [`FilePlan::CopyHere`]: moving
    /// versions it pulled would undo what the hub decided).
    fn pulls_from_a_hub(&self) -> bool {
        false
    }
    /// A new file id (for a conflict copy made by arrival).
    fn new_id(&mut self) -> Self::Id;
    /// The id of the conflict copy of a diverged file ([`crate::Fork::copy_id`]),
    /// as this side names files.
    fn fork_copy_id(&self, file: &Self::Id, fork: &crate::Fork<Self::Id>) -> Self::Id;
    /// The state here of each metadata key (file, key), in order: its
    /// value (canonical JSON) or `None` where it was removed, and when;
    /// `None` for a key never set here.
    async fn keys_here(
        &mut self,
        keys: &[(Self::Id, &str)],
    ) -> Result<Vec<Option<(Option<String>, i64)>>, Self::Error>;
    /// Versions the arriving rows carry that are not among them (rows of
    /// the same apply set aside by [`ApplySide::set_aside`]).
    fn carried_elsewhere(&self) -> Vec<Self::Id> {
        Vec::new()
    }
    /// Files that diverged in rows of the same apply set aside before.
    fn diverged_elsewhere(&self) -> Vec<Self::Id> {
        Vec::new()
    }
    /// A version of a diverged file whose row is not among the arriving
    /// rows: `Some` keeps it among them (where its clash is the error of
    /// its upsert); a side that applies in windows holds it until the row
    /// comes.
    fn set_aside(&mut self, version: Self::Version) -> Option<Self::Version> {
        Some(version)
    }
}

/// What [`ApplySide::first_reads`] found.
#[derive(Debug)]
pub struct FirstReads<Id> {
    /// [`ApplySide::files_here`].
    pub here: HashMap<Id, HereFile>,
    /// [`ApplySide::clashes`].
    pub clashes: Vec<Clash<Id>>,
    /// [`ApplySide::held_elsewhere`].
    pub held_elsewhere: Vec<(Id, (Id, i64))>,
}

impl<Id> Default for FirstReads<Id> {
    fn default() -> Self {
        FirstReads {
            here: HashMap::new(),
            clashes: Vec::new(),
            held_elsewhere: Vec::new(),
        }
    }
}

/// What [`resolve`] decided, and the versions it found this side holds
/// (among the arriving versions of diverged files and those carried
/// elsewhere), which stay where they are when their file becomes a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution<Id: Eq + Hash> {
    /// The plan, carried out on the rows.
    pub decided: Decided<Id>,
    /// Versions this side holds already.
    pub known: HashSet<Id>,
    /// The arriving files that have a row here.
    pub here: HashSet<Id>,
}

/// The one algorithm for arriving rows, before they are written: reads
/// what is here through `side`, decides how the arriving versions meet
/// the versions here ([`crate::meet_versions`]: those that stay where this
/// side has them leave the rows, and the versions here that the rows move
/// to another file come first, freeing their numbers), then plans and
/// carries out every file row ([`decide`]).
/// Rows whose writer says nothing of what it had seen here
/// ([`Seen::Unknown`]: a change file) also leave out their changes to
/// metadata keys that lose to a later change here ([`older_keys`]); the
/// copies still take the whole side.
#[allow(clippy::too_many_arguments)]
pub async fn resolve<S: ApplySide>(
    side: &mut S,
    files: &mut Vec<S::File>,
    versions: &mut Vec<S::Version>,
    metadata: &mut Vec<S::Metadata>,
    removals: &mut Vec<S::Removal>,
    source: &str,
    seen: Seen,
) -> Result<Resolution<S::Id>, S::Error> {
    let older = match seen {
        Seen::Unknown => {
            let changes = metadata.iter().map(|m| m.key_change());
            let changes = changes.chain(removals.iter().map(|r| r.key_change()));
            let changes: Vec<_> = changes.flatten().collect();
            older_keys(side, &changes).await?
        }
        Seen::Through(_) => HashSet::new(),
    };
    let ids: Vec<S::Id> = files.iter().map(|f| f.file().clone()).collect();
    let FirstReads {
        here,
        clashes,
        held_elsewhere,
    } = side.first_reads(&ids, versions).await?;
    let mut carried: HashMap<S::Id, Option<(S::Id, i64)>> = versions
        .iter()
        .map(|v| (v.id().clone(), Some((v.file().clone(), v.number()))))
        .collect();
    let elsewhere = side.carried_elsewhere();
    carried.extend(elsewhere.iter().map(|id| (id.clone(), None)));
    let mut met = if versions.is_empty() {
        VersionsMet::default()
    } else {
        let ids: Vec<S::Id> = clashes.iter().map(|c| c.version.clone()).collect();
        let known = match ids.is_empty() {
            true => HashSet::new(),
            false => side.known(&ids).await?,
        };
        let mut met = crate::meet_versions(&clashes, &carried, &known);
        // A version here that the arriving rows move to another file (a
        // copy their writer made, or one this side made that their writer
        // has taken), whether or not its number clashes: the row here whose
        // current version it is is no row to settle with (it would keep
        // naming a version that leaves the file).
        for (id, at) in held_elsewhere {
            if !met.staying.contains(&id) {
                met.superseded.insert(at);
            }
        }
        if side.pulls_from_a_hub() {
            for fork in met.forks.values_mut() {
                fork.arriving_first = false;
            }
        }
        met
    };
    // A change file's versions that continue a line this side keeps in
    // another file (a conflict copy made of their side before they were
    // written): their file's rows go there.
    let followed = match seen {
        Seen::Unknown if !versions.is_empty() => {
            let mut followed = follow(side, versions, &carried).await?;
            // (Not into a file whose own row arrives too: one row each.)
            followed.retain(|_, to| !ids.contains(to));
            for file in followed.keys() {
                met.diverged.remove(file);
                met.forks.remove(file);
            }
            followed
        }
        _ => HashMap::new(),
    };
    let mut here = here;
    let unread: Vec<S::Id> = followed
        .values()
        .filter(|g| !here.contains_key(*g))
        .cloned()
        .collect();
    if !unread.is_empty() {
        here.extend(side.files_here(&unread).await?);
    }
    if !met.staying.is_empty() {
        versions.retain(|v| !met.staying.contains(v.id()));
    }
    if !met.vacating.is_empty() {
        // Stable: otherwise in the order they came.
        versions.sort_by_key(|v| !met.vacating.contains(v.id()));
    }
    met.diverged.extend(side.diverged_elsewhere());
    // Versions of diverged files whose row is not among these rows.
    let rows: HashSet<&S::Id> = ids.iter().collect();
    if !met.diverged.is_empty() {
        let mut kept = Vec::with_capacity(versions.len());
        for v in std::mem::take(versions) {
            if met.diverged.contains(v.file()) && !rows.contains(v.file()) {
                kept.extend(side.set_aside(v));
            } else {
                kept.push(v);
            }
        }
        *versions = kept;
    }
    let known = if met.diverged.is_empty() && followed.is_empty() {
        HashSet::new()
    } else {
        let ids: Vec<S::Id> = versions
            .iter()
            .filter(|v| met.diverged.contains(v.file()) || followed.contains_key(v.file()))
            .map(|v| v.id().clone())
            .chain(elsewhere)
            .collect();
        side.known(&ids).await?
    };
    let decided = decide(
        files,
        versions,
        metadata,
        &met,
        &followed,
        |id| here.get(id).map(HereFile::row),
        &known,
        |fork| match fork {
            Some((file, fork)) => side.fork_copy_id(file, fork),
            None => side.new_id(),
        },
        source,
        seen,
    );
    // A version this side holds already that arrives in a file whose line
    // continues in another file here (`followed`) stays where this side
    // has it: in that other file, or in the one both lines forked from.
    // Its writer, not knowing of the copy, placed it in its own file; the
    // row applied as it came would move it back there, under the versions
    // that file holds here.
    if !followed.is_empty() && !known.is_empty() {
        versions.retain(|v| !(followed.contains_key(v.file()) && known.contains(v.id())));
    }
    if !older.is_empty() {
        let lost = |c: Option<(&S::Id, &str, KeySide<'_>)>| {
            c.is_some_and(|(file, key, _)| older.contains(&(file.clone(), key.to_string())))
        };
        metadata.retain(|m| !lost(m.key_change()));
        removals.retain(|r| !lost(r.key_change()));
    }
    Ok(Resolution {
        decided,
        known,
        here: here.into_keys().collect(),
    })
}

/// The arriving files whose versions continue a line of versions that this
/// side holds in another file (a version's parent is here in another file,
/// the file it arrives in forked from that one here, see
/// [`ApplySide::parents_elsewhere`], and the arriving rows do not move the
/// parent): each with that file, by the
/// lowest such version of the file. A version follows its parent: when a
/// side met a content conflict and keeps the losing side's versions in a
/// conflict copy, a version that side made later, not knowing, goes to the
/// copy too (and the file's arriving row with it), instead of landing on
/// top of the winning side's versions.
async fn follow<S: ApplySide>(
    side: &mut S,
    versions: &[S::Version],
    carried: &HashMap<S::Id, Option<(S::Id, i64)>>,
) -> Result<HashMap<S::Id, S::Id>, S::Error> {
    let at: HashMap<&S::Id, (&S::Id, i64)> = versions
        .iter()
        .map(|v| (v.id(), (v.file(), v.number())))
        .collect();
    let mut lowest: HashMap<S::Id, (i64, S::Id)> = HashMap::new();
    for (version, parent, holder) in side.parents_elsewhere(versions).await? {
        if carried.contains_key(&parent) {
            continue;
        }
        let Some(&(file, number)) = at.get(&version) else {
            continue;
        };
        match lowest.get(file) {
            Some((n, _)) if *n <= number => {}
            _ => {
                lowest.insert(file.clone(), (number, holder));
            }
        }
    }
    let mut followed: HashMap<S::Id, S::Id> =
        lowest.into_iter().map(|(f, (_, g))| (f, g)).collect();
    if followed.is_empty() {
        return Ok(followed);
    }
    // A file whose versions would take numbers that the other file holds
    // here (this side gave the copy versions of its own) does not follow:
    // its versions stay in their file, by the rule of that file.
    let moving = moved_rows(versions, &followed);
    let back: HashMap<S::Id, S::Id> = followed
        .iter()
        .map(|(f, g)| (g.clone(), f.clone()))
        .collect();
    for clash in side.clashes(&moving).await? {
        if let Some(file) = back.get(&clash.file) {
            followed.remove(file);
        }
    }
    Ok(followed)
}

/// The changes to metadata keys (file, key, the change: a value or a
/// removal) of a change file that lose to a later change of the key here,
/// by [`crate::key_arrives`] (a change file says nothing of what its
/// writer had seen: the later change wins, per key): they stay out.
pub async fn older_keys<S: ApplySide>(
    side: &mut S,
    changes: &[(&S::Id, &str, KeySide<'_>)],
) -> Result<HashSet<(S::Id, String)>, S::Error> {
    if changes.is_empty() {
        return Ok(HashSet::new());
    }
    let keys: Vec<(S::Id, &str)> = changes.iter().map(|(f, k, _)| ((*f).clone(), *k)).collect();
    let here = side.keys_here(&keys).await?;
    let mut older = HashSet::new();
    for ((file, key, arriving), here) in changes.iter().zip(here) {
        let here = here.as_ref().map(|(value, at)| KeySide {
            value: value.as_deref(),
            at: *at,
        });
        if !crate::key_arrives(*arriving, here) {
            older.insert(((*file).clone(), key.to_string()));
        }
    }
    Ok(older)
}

// Each row names its file by `path_id`.
macro_rules! of_file {
    ($($row:ty),*) => {$(
        impl OfFile for $row {
            type Id = String;
            fn file(&self) -> &String {
                &self.path_id
            }
            fn move_to(&mut self, file: &String) {
                self.path_id.clone_from(file);
            }
        }
    )*};
}
of_file!(FileRow, VersionRow, MetadataRow);

impl ArrivingFile for FileRow {
    fn side(&self) -> FileSide<'_> {
        FileSide {
            // A file hidden until its path is free (a pull cut between
            // pages) is live.
            live: self.deleted_at.is_none() || self.deleted_at == Some(HIDDEN),
            version: self.current_version,
            path: &self.virtual_path,
            changed_at: self.changed_at(),
        }
    }
    fn merge_at(&mut self, path: String, at: i64) {
        self.virtual_path = path;
        self.updated_at = at;
    }
    fn retire(&mut self, at: i64) {
        self.deleted_at = Some(at);
    }
}

impl ArrivingVersion for VersionRow {
    fn id(&self) -> &String {
        &self.version_id
    }
    fn number(&self) -> i64 {
        self.version_number
    }
}

impl KeyChange<String> for MetadataRow {
    fn key_change(&self) -> Option<(&String, &str, KeySide<'_>)> {
        let side = KeySide {
            value: Some(&self.value),
            at: self.updated_at,
        };
        Some((&self.path_id, &self.key, side))
    }
}

impl KeyChange<String> for TombstoneRow {
    fn key_change(&self) -> Option<(&String, &str, KeySide<'_>)> {
        let side = KeySide {
            value: None,
            at: self.deleted_at,
        };
        (self.table_name == "file_metadata").then_some((&self.key1, self.key2.as_str(), side))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflict::{Clash, meet_versions};

    /// A row of a file as a test side holds it: (file, path, version,
    /// changed at) for a file's row; (file, id) for a version; (file, key)
    /// for a metadata row.
    #[derive(Debug, Clone, PartialEq)]
    struct Row(String, String, i64, i64);

    impl OfFile for Row {
        type Id = String;
        fn file(&self) -> &String {
            &self.0
        }
        fn move_to(&mut self, file: &String) {
            self.0.clone_from(file);
        }
    }

    impl ArrivingFile for Row {
        fn side(&self) -> FileSide<'_> {
            FileSide {
                live: true,
                version: self.2,
                path: &self.1,
                changed_at: self.3,
            }
        }
        fn merge_at(&mut self, path: String, at: i64) {
            self.1 = path;
            self.3 = at;
        }
        fn retire(&mut self, at: i64) {
            self.1 = "(deleted)".into();
            self.3 = at;
        }
    }

    impl ArrivingVersion for Row {
        fn id(&self) -> &String {
            &self.1
        }
        fn number(&self) -> i64 {
            self.2
        }
    }

    fn row(file: &str, second: &str, version: i64, at: i64) -> Row {
        Row(file.into(), second.into(), version, at)
    }

    #[test]
    fn every_plan_is_carried_out_on_the_rows() {
        // The writer had seen nothing here (every row here is unseen).
        // Here: "d" at v2 (its v2 is "h", not carried: diverged), "k" at
        // v1 as the arriving row (a tie: the row here stays), "r" at v1
        // renamed to /r2 (the arriving row has v2: it wins, at /r2), "m" at
        // v2 (the arriving row, v1 at /m2, renamed it: the file here moves
        // there), "s" whose arriving row's v3 "s3" is here already in a
        // copy (stale). "n" is new here.
        let here_rows: HashMap<&str, (i64, &str, i64)> = [
            ("d", (2, "/d", 5)),
            ("k", (1, "/k", 9)),
            ("r", (1, "/r2", 9)),
            ("m", (2, "/m", 5)),
            ("s", (2, "/s", 5)),
        ]
        .into_iter()
        .collect();
        let mut files = vec![
            row("d", "/d", 2, 1),
            row("k", "/k", 1, 1),
            row("r", "/r", 2, 1),
            row("m", "/m2", 1, 1),
            row("s", "/s", 3, 1),
            row("n", "/n", 1, 1),
        ];
        let mut versions = vec![
            row("d", "d1", 1, 0),
            row("d", "d2", 2, 0),
            row("r", "r2", 2, 0),
        ];
        let mut metadata = vec![row("d", "tag", 0, 0), row("n", "tag", 0, 0)];
        let carried: HashMap<String, Option<(String, i64)>> = versions
            .iter()
            .map(|v| (v.1.clone(), Some((v.0.clone(), v.2))))
            .collect();
        let clashes = [
            Clash {
                version: "d2".to_string(),
                file: "d".to_string(),
                number: 2,
                here: "h".to_string(),
                made: (0, 0),
            },
            Clash {
                version: "s3".to_string(),
                file: "s".to_string(),
                number: 3,
                here: "x".to_string(),
                made: (0, 0),
            },
        ];
        // "d1" is here already (the writer had it), "s3" too (in a copy).
        let known: HashSet<String> = ["d1", "s3"].into_iter().map(String::from).collect();
        let met = meet_versions(&clashes, &carried, &known);
        let here = |id: &String| {
            here_rows
                .get(id.as_str())
                .map(|&(version, path, at)| HereRow {
                    change_seq: 1,
                    origin: None,
                    file: FileSide {
                        live: true,
                        version,
                        path,
                        changed_at: at,
                    },
                })
        };
        let mut next = 0;
        let decided = decide(
            &mut files,
            &mut versions,
            &mut metadata,
            &met,
            &HashMap::new(),
            here,
            &known,
            |_| {
                next += 1;
                format!("copy{next}")
            },
            "src",
            Seen::Through(0),
        );
        assert_eq!(decided.copies, vec![("d".to_string(), "copy1".to_string())]);
        // Merged rows are stamped just after the later of the two.
        assert_eq!(decided.moves, vec![("m".to_string(), "/m2".to_string(), 6)]);
        assert_eq!(decided.renamed, vec!["r".to_string()]);
        let dropped: HashSet<String> = ["k", "m", "s"].into_iter().map(String::from).collect();
        assert_eq!(decided.dropped, dropped);
        // The copy's row keeps the file's path until its side names it.
        assert_eq!(
            files,
            vec![
                row("copy1", "/d", 2, 1),
                row("r", "/r2", 2, 10),
                row("n", "/n", 1, 1)
            ]
        );
        // The version here already stays with the file; the other goes to
        // the copy; a metadata row of the file is copied to it.
        assert_eq!(
            versions,
            vec![
                row("d", "d1", 1, 0),
                row("copy1", "d2", 2, 0),
                row("r", "r2", 2, 0)
            ]
        );
        assert_eq!(
            metadata,
            vec![
                row("d", "tag", 0, 0),
                row("n", "tag", 0, 0),
                row("copy1", "tag", 0, 0)
            ]
        );
    }

    #[test]
    fn a_copy_made_the_other_way_round_is_retired() {
        // Both sides met one conflict of file "f": here, f's version 2 is
        // "h"; the arriving side put "h" in its copy "c" and kept its own
        // "f2" in f, which is here already (in this side's copy). Both stay
        // where this side has them: f's arriving row stays out, and "c",
        // which this side does not have, arrives as its deletion.
        // Then the same, but the arriving rows move f on to a version 3:
        // "h" is no longer f's current version, and c stays out as before.
        for f_version in [2, 3] {
            let mut files = vec![row("f", "/f", f_version, 1), row("c", "/c", 1, 7)];
            let mut versions = vec![row("f", "f2", 2, 0), row("c", "h", 1, 0)];
            let carried: HashMap<String, Option<(String, i64)>> = versions
                .iter()
                .map(|v| (v.1.clone(), Some((v.0.clone(), v.2))))
                .collect();
            let clashes = [Clash {
                version: "f2".to_string(),
                file: "f".to_string(),
                number: 2,
                here: "h".to_string(),
                made: (0, 0),
            }];
            let known: HashSet<String> = ["f2".to_string()].into_iter().collect();
            let met = meet_versions(&clashes, &carried, &known);
            let here = |id: &String| {
                (id == "f").then_some(HereRow {
                    change_seq: 1,
                    origin: None,
                    file: FileSide {
                        live: true,
                        version: 2,
                        path: "/f",
                        changed_at: 5,
                    },
                })
            };
            let decided = decide(
                &mut files,
                &mut versions,
                &mut Vec::<Row>::new(),
                &met,
                &HashMap::new(),
                here,
                &known,
                |_| unreachable!("no copy is made"),
                "src",
                Seen::Unknown,
            );
            if f_version == 2 {
                assert_eq!(decided.retired, vec!["c".to_string()]);
                assert_eq!(decided.dropped, ["f".to_string()].into_iter().collect());
                // Stamped just after the arriving row.
                assert_eq!(files, vec![row("c", "(deleted)", 1, 8)]);
            } else {
                assert!(decided.retired.is_empty());
                assert_eq!(decided.dropped, ["c".to_string()].into_iter().collect());
                assert_eq!(files, vec![row("f", "/f", 3, 1)]);
            }
        }
    }
}

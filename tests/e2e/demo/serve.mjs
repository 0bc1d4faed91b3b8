// Serves the demo page and the built package on 127.0.0.1, for trying it by
// hand: `node tests/e2e/demo/serve.mjs [PORT]` (after scripts/build-npm.sh).
import { demoRoutes, serve } from "../serve.mjs";

const port = Number(process.argv[2] ?? 5173);
const { origin } = await serve(demoRoutes, port);
console.log(`the demo: ${origin}/demo/  (with a sync server: ${origin}/demo/?sync=http://127.0.0.1:8080)`);

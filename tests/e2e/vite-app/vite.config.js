// The setting the package's README asks for: keep it out of dependency
// pre-bundling so that its Worker and .wasm URLs resolve.
export default {
  optimizeDeps: { exclude: ["nexus-metastore"] },
  build: { target: "es2022" },
  worker: { format: "es" },
};

// Builds dist/: the demo page, its stylesheet and one ES module bundle of the
// page, the client library and protobuf-es. The output depends only on the
// sources and the pinned esbuild (no timestamps, no absolute paths, no
// source maps), so make web is reproducible and CI can diff it.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  absWorkingDir: root,
  entryPoints: ["src/demo/main.ts"],
  outfile: "dist/app.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  legalComments: "eof",
  charset: "utf8",
  logLevel: "warning",
});
for (const name of ["index.html", "style.css"]) {
  await copyFile(join(root, "src/demo", name), join(dist, name));
}

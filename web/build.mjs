// Bundle the page into src/medcl/annotate/static/ and collect the licences of what it bundles.
import { build } from "esbuild";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

const out = "../src/medcl/annotate/static";
const result = await build({
  entryPoints: ["src/main.js"], bundle: true, minify: true, format: "esm", target: "es2020",
  outfile: `${out}/annotate.js`, metafile: true, legalComments: "none", logLevel: "warning",
});

// every npm package with a file in the bundle, and its licence text
const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (m) packages.set(m[1], join("node_modules", m[1]));
}
const sections = [];
for (const [name, dir] of [...packages].sort()) {
  const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)/i.test(f));
  const local = join("licenses", `${name.replace("/", "__")}.txt`);
  const text = file ? readFileSync(join(dir, file), "utf8") : existsSync(local) ? readFileSync(local, "utf8") : null;
  if (!text) throw new Error(`${name}: no licence file in the package or in web/licenses/`);
  sections.push(`${name} ${meta.version} (${meta.license})\n${"=".repeat(60)}\n${text.trim()}\n`);
}
writeFileSync(`${out}/THIRD_PARTY_LICENSES.txt`,
  `Licences of the packages bundled into annotate.js (built by web/build.mjs).\n\n${sections.join("\n")}`);
console.log(`annotate.js: ${packages.size} packages bundled: ${[...packages.keys()].join(", ")}`);

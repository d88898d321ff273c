// Unpacks the prebuilt OHIF viewer (the `dist/` folder of the npm package pinned in package.json
// "ohifApp") into node_modules/.ohif-app/dist. Runs as `npm ci`'s postinstall.
//
// Why not a normal dependency: @ohif/app's declared dependencies cannot be resolved from the
// registry (@ohif/i18n@3.13.2 was never published), and the test needs only the static app.
// `npm pack` is npm's ordinary client (it uses and fills the npm cache, so CI reruns are offline);
// the tarball is checked against the pinned sha512 before anything is unpacked.
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pinned = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).ohifApp;
const target = join(here, "node_modules", ".ohif-app");
const stamp = join(target, "integrity");

if (existsSync(stamp) && readFileSync(stamp, "utf8") === pinned.integrity && existsSync(join(target, "dist", "index.html"))) {
  console.log(`fetch_ohif: ${pinned.spec} already unpacked in ${target}`);
  process.exit(0);
}

const work = mkdtempSync(join(tmpdir(), "ohif-pack-"));
try {
  const out = execFileSync("npm", ["pack", pinned.spec, "--json", "--pack-destination", work],
                           { cwd: work, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  const tarball = join(work, JSON.parse(out)[0].filename);
  const [algo, expected] = pinned.integrity.split("-", 2);
  const actual = createHash(algo).update(readFileSync(tarball)).digest("base64");
  if (actual !== expected) {
    throw new Error(`fetch_ohif: ${tarball}: ${algo} ${actual} does not match the pinned ${pinned.integrity}`);
  }
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target, { recursive: true });
  execFileSync("tar", ["-xzf", tarball, "-C", target, "--strip-components=1", "package/dist"], { stdio: "inherit" });
  writeFileSync(stamp, pinned.integrity);
  console.log(`fetch_ohif: ${pinned.spec} dist/ unpacked in ${target}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}

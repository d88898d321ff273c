// Opens one study in the real OHIF viewer (Debian Chromium, headless, driven by playwright-core) the
// way a radiologist would, and records what the page shows; tests/test_viewer_ohif.py asserts on it.
//
//   node ohif_check.mjs JOB.json        (JOB: see tests/test_viewer_ohif.py::browser_job)
//
// Steps: open /viewer?StudyInstanceUIDs=..., double-click the SR in the study browser (accept the
// "track measurements" prompt when OHIF offers one), step through the SR viewport's measurements
// with its arrows, open the measurement panel; double-click the SEG, accept "open this
// Segmentation", open the segmentation panel and click every segment (OHIF jumps to the segment)
// counting coloured pixels on the viewport canvas; open the QSM and the summary series alone;
// finally open the summary series in Orthanc Explorer and its first image's preview. Writes JOB.out_dir/observed.json and screenshots there.
// No assertion here: every step records what it saw (or the error) and the next step still runs.
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const shot = (name) => join(job.out_dir, `${name}.png`);
const observed = { job, console: [], page_errors: [], failed_requests: [], steps: {} };

const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const t0 = Date.now();
function mark(what) {
  observed.marks = observed.marks || [];
  observed.marks.push(`${((Date.now() - t0) / 1000).toFixed(1)} s ${what}`);
}

async function step(name, fn) {
  mark(`start ${name}`);
  const started = Date.now();
  try {
    observed.steps[name] = { ...(await fn()), ok: true };
  } catch (err) {
    observed.steps[name] = { ok: false, error: String(err && err.stack || err) };
  }
  observed.steps[name].seconds = (Date.now() - started) / 1000;
}

/** Text boxes of the annotations drawn on the viewport (one string per box, lines joined by " | "). */
async function annotationTexts(page) {
  return page.$$eval('[data-cy="viewport-pane"] svg text', (nodes) => nodes.map((t) => {
    const spans = [...t.querySelectorAll("tspan")].map((s) => s.textContent.trim()).filter(Boolean);
    return (spans.length ? spans : [t.textContent.trim()]).join(" | ");
  }).filter(Boolean));
}

async function bodyText(page) {
  return page.locator("body").innerText();
}

/** The text of the right-hand panel, from its title (e.g. "Measurements (" or "Segmentations") on. */
function panelText(text, title) {
  const at = text.indexOf(title);
  return at < 0 ? "" : text.slice(at);
}

/** Coloured (not grey) pixels on the viewport canvas: the SEG overlay is the only colour there
 * (SR annotations are SVG, not canvas). */
async function colouredPixels(page) {
  return page.$$eval('[data-cy="viewport-pane"] canvas', (canvases) => {
    let count = 0;
    for (const c of canvases) {
      const ctx = c.getContext("2d", { willReadFrequently: true });
      if (!ctx || !c.width || !c.height) continue;
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) {
        const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
        if (hi - lo > 60) count += 1;
      }
    }
    return count;
  });
}

async function imageIndexText(page) {
  const t = await page.locator('[data-cy="viewport-overlay-bottom-right"]').innerText({ timeout: 1000 }).catch(() => "");
  return t.replace(/\s+/g, " ").trim();
}

async function acceptPrompt(page, timeoutMs) {
  const yes = page.locator('[data-cy="yes-hydrate-btn"]');
  try {
    await yes.waitFor({ state: "visible", timeout: timeoutMs });
  } catch {
    return false;
  }
  await yes.click();
  return true;
}

async function openStudy(page, seriesUids = null) {
  const only = seriesUids ? `&SeriesInstanceUIDs=${seriesUids.join(",")}` : "";
  await page.goto(`${job.base}/viewer?StudyInstanceUIDs=${job.study_uid}${only}`, { waitUntil: "load" });
  await page.locator('[data-cy="study-browser-thumbnail"]').first().waitFor({ timeout: 60000 });
  // The first-visit tour covers the viewport: dismiss it the way a user would.
  await page.getByText("Skip all", { exact: true }).click({ timeout: 5000 }).catch(() => {});
  await page.locator('[data-cy="viewport-overlay-bottom-right"]').waitFor({ timeout: 30000 });
}

function errorBoundarySeen() {
  const lines = [...observed.console, ...observed.page_errors];
  return lines.filter((l) => /Error Boundary|Cannot read properties|Something went wrong/.test(l));
}

const profile = mkdtempSync(join(tmpdir(), "bp-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: job.chromium || "/usr/bin/chromium",
  headless: true,
  args: CHROMIUM_ARGS,
  viewport: { width: job.width || 1440, height: job.height || 900 },
});
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => observed.console.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => observed.page_errors.push(String(e && e.message || e)));
  page.on("requestfailed", (r) => {
    const why = r.failure() && r.failure().errorText;
    if (why !== "net::ERR_ABORTED") observed.failed_requests.push(`${r.url()} ${why}`);
  });
  page.on("request", (r) => {
    if (!r.url().startsWith(job.base) && !r.url().startsWith("data:") && !r.url().startsWith("blob:")) {
      observed.failed_requests.push(`off-origin request: ${r.url()}`);
    }
  });

  await step("study", async () => {
    await openStudy(page);
    await page.waitForTimeout(1500);
    await page.screenshot({ path: shot("ohif_study") });
    return { thumbnails: await page.locator('[data-cy="series-description-label"]').allInnerTexts() };
  });

  await step("sr", async () => {
    const before = observed.console.length;
    await page.getByText(job.sr_description, { exact: true }).dblclick();
    mark("sr double-clicked");
    const prompted = await acceptPrompt(page, 4000);
    mark("sr prompt handled");
    await page.waitForTimeout(2500);
    const first = await annotationTexts(page);
    await page.screenshot({ path: shot("ohif_sr") });
    mark("sr screenshot");
    // The SR viewport shows one measurement at a time; its arrows step through all of them.
    const views = [{ image: await imageIndexText(page), texts: first }];
    const arrows = page.locator('[data-cy="viewport-action-arrows-right"]');
    const steps = (await arrows.count()) ? job.expected_spots + 1 : 0;
    let most = first.length;
    for (let i = 0; i < steps; i += 1) {
      await arrows.first().click();
      await page.waitForTimeout(900);
      views.push({ image: await imageIndexText(page), texts: await annotationTexts(page) });
      if (views[views.length - 1].texts.length > most) {  // the README shows the busiest slice
        most = views[views.length - 1].texts.length;
        await page.screenshot({ path: shot("ohif_sr") });
      }
    }
    mark("sr views read");
    await page.locator('[data-cy="trackedMeasurements-btn"]').click({ timeout: 5000 }).catch(() => {});
    await page.waitForTimeout(1500);
    await page.screenshot({ path: shot("ohif_sr_panel") });
    mark("sr panel screenshot");
    const text = await bodyText(page);
    return {
      hydrate_prompt_accepted: prompted,
      views,
      measurement_panel: panelText(text, "Measurements ("),
      viewport_black: (await colouredOrAnyPixels(page)) === 0,
      console_since_load: observed.console.slice(before),
    };
  });

  await step("seg", async () => {
    // A fresh viewer, so the SR's state does not mix in, showing only the magnitude series and the
    // SEG: OHIF 3.13 attaches a SEG to the first loaded series it references, so a SEG that also
    // references the phase series lands on either (tests/test_viewer_ohif.py checks that apart).
    // The magnitude series is then opened the way a user would, by its thumbnail.
    await openStudy(page, [job.magnitude_series_uid, job.seg_series_uid]);
    // (the thumbnail's own "S:<n>" element: its text run on with the image count, "S:520")
    await page.locator('[data-cy="study-browser-thumbnail"]', { has: page.getByText(`S:${job.magnitude_series_number}`, { exact: true }) })
      .first().dblclick();
    await page.waitForTimeout(1500);
    mark(`seg: magnitude series shown (${await imageIndexText(page)})`);
    await page.getByText(job.seg_description, { exact: true }).dblclick();
    const prompted = await acceptPrompt(page, 15000);
    const notices = await bodyText(page);  // OHIF's toasts (e.g. a SEG without display colours) show now
    await page.waitForTimeout(3000);
    await page.locator('[data-cy="panelSegmentation-btn"]').click({ timeout: 5000 }).catch(() => {});
    await page.waitForTimeout(1500);
    mark(`seg: loaded, panel open (${await imageIndexText(page)})`);
    const text = await bodyText(page);
    const panel = panelText(text, "Segmentations");
    const segments = [];
    for (const label of job.segment_labels) {
      const row = page.getByText(label, { exact: true }).last();
      const entry = { label, listed: (await row.count()) > 0 };
      if (entry.listed) {
        await row.click();
        await page.waitForTimeout(1200);
        entry.image = await imageIndexText(page);
        entry.coloured_pixels = await colouredPixels(page);
      }
      segments.push(entry);
    }
    mark("seg: segments visited");
    // Screenshot the largest overlay, with the pointer off the panel (its hover card covers the image).
    const best = segments.filter((e) => e.listed).sort((a, b) => b.coloured_pixels - a.coloured_pixels)[0];
    if (best) {
      await page.getByText(best.label, { exact: true }).last().click();
      await page.mouse.move(5, (job.height || 900) - 5);
      await page.waitForTimeout(1200);
      await page.screenshot({ path: shot("ohif_seg") });
    }
    return { open_prompt_accepted: prompted, segmentation_panel: panel, segments, notices_on_load: notices };
  });

  /** One series alone, opened by its thumbnail as a user would: what the viewport draws (distinct
   * grey levels on the canvas: a flat or black image has one or two; coloured pixels), its
   * overlays, and any error boundary. */
  async function seriesAlone(uid, description, screenshotName) {
    await openStudy(page, [uid]);
    await page.getByText(description, { exact: true }).dblclick().catch(() => {});
    await page.waitForTimeout(2500);
    await page.mouse.move(5, (job.height || 900) - 5);
    await page.screenshot({ path: shot(screenshotName) });
    const canvas = await page.$$eval('[data-cy="viewport-pane"] canvas', (canvases) => {
      const levels = new Set();
      let lit = 0, total = 0;
      for (const c of canvases) {
        const ctx = c.getContext("2d", { willReadFrequently: true });
        if (!ctx || !c.width || !c.height) continue;
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) {
          total += 1;
          levels.add(d[i]);
          if (d[i] + d[i + 1] + d[i + 2] > 30) lit += 1;
        }
      }
      return { grey_levels: levels.size, lit_fraction: total ? lit / total : 0 };
    });
    const overlays = await page.$$eval('[data-cy^="viewport-overlay"]', (nodes) => nodes.map((n) => n.innerText.replace(/\s+/g, " ").trim()));
    return { ...canvas, coloured_pixels: await colouredPixels(page), overlays, image: await imageIndexText(page),
             error_lines: errorBoundarySeen() };
  }

  // The QSM series (issue 11) and the summary series (burned-in RGB cards, stored JPEG-LS Lossless:
  // OHIF must decode them from what Orthanc's DICOMweb serves).
  if (job.qsm_series_uid) await step("qsm", () => seriesAlone(job.qsm_series_uid, job.qsm_description, "ohif_qsm"));
  if (job.summary_series_uid) {
    await step("summary", () => seriesAlone(job.summary_series_uid, job.summary_description, "ohif_summary"));
  }

  await step("explorer", async () => {
    await page.goto(`${job.base}/app/explorer.html#series?uuid=${job.summary_series_id}`, { waitUntil: "load" });
    await page.waitForTimeout(2500);
    await page.screenshot({ path: shot("explorer_summary_series") });
    const seriesText = await bodyText(page);
    await page.goto(`${job.base}/instances/${job.summary_instance_id}/preview`, { waitUntil: "load" });
    const size = await page.evaluate(() => {
      const img = document.images[0];
      return img ? { width: img.naturalWidth, height: img.naturalHeight } : null;
    });
    if (size) await page.setViewportSize({ width: Math.max(size.width, 200), height: Math.max(size.height, 200) });
    await page.screenshot({ path: shot("explorer_summary_card") });
    return { series_page: seriesText, preview_size: size };
  });
} finally {
  observed.error_lines = errorBoundarySeen();
  writeFileSync(join(job.out_dir, "observed.json"), JSON.stringify(observed, null, 1));
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

/** Any non-black pixel on the viewport canvas (0 = the blank viewport of a failed SR load). */
async function colouredOrAnyPixels(page) {
  return page.$$eval('[data-cy="viewport-pane"] canvas', (canvases) => {
    let count = 0;
    for (const c of canvases) {
      const ctx = c.getContext("2d", { willReadFrequently: true });
      if (!ctx || !c.width || !c.height) continue;
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 30) count += 1;
    }
    return count;
  });
}

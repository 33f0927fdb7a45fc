// Opens an allocscope flame graph page in headless Chromium (Debian's chromium, driven by
// playwright-core) and does what a user would: reads the drawn frames' widths, clicks a frame
// to zoom, searches, switches to objects, and saves a screenshot. Any request other than the
// page's own file fails the run: the page must work offline.
//
//   node flamegraph_check.js PAGE.html SCREENSHOT.png EXPECT.json
//
// EXPECT.json: {"bytes": {"site": share, ...}, "objects": {"site": share, ...},
//               "zoom": "site", "search": "site", "objects_type": "alloc_objects"}
// Shares are of the whole profile (0..1). Prints one JSON line of what it measured; exits 1
// with the reason on the first expectation that fails.
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const [pagePath, shotPath, expectPath] = process.argv.slice(2);
const expect = JSON.parse(fs.readFileSync(expectPath, "utf8"));
const TOLERANCE = 0.01; // of the whole width: widths are whole pixels, shares are exact

function fail(message) {
	console.error("flamegraph_check: " + message);
	process.exit(1);
}

// Share of the root's width that frames called name take, summed over where they appear.
async function shares(page) {
	const frames = await page.evaluate(() => window.allocscopeFrames);
	const root = frames.find((f) => !f.faded); // the zoomed frame comes first
	const out = {};
	for (const f of frames) if (!f.faded) out[f.name] = (out[f.name] || 0) + f.w / root.w;
	return { frames, out, root };
}

function checkShares(measured, expected, what) {
	for (const [name, share] of Object.entries(expected)) {
		const got = measured[name] || 0;
		if (Math.abs(got - share) > TOLERANCE)
			fail(`${what}: ${name} is drawn ${(100 * got).toFixed(2)}% wide, expected ` +
			     `${(100 * share).toFixed(2)}%`);
	}
}

(async () => {
	const browser = await chromium.launch({
		executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
		args: ["--no-sandbox", "--disable-gpu", "--no-first-run"],
	});
	const result = {};
	try {
		const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
		const page = await context.newPage();
		const foreign = [];
		await page.route("**/*", (route) => {
			const url = route.request().url();
			if (url.startsWith("file://")) return route.continue();
			foreign.push(url);
			return route.abort();
		});
		const errors = [];
		page.on("pageerror", (e) => errors.push(String(e)));
		await page.goto("file://" + path.resolve(pagePath));
		await page.waitForFunction(() => window.allocscopeReady === true, null, { timeout: 30000 });
		if (errors.length) fail("page errors: " + errors.join("; "));

		// Widths: each site as wide as its share of alloc_space.
		let { frames, out } = await shares(page);
		result.frames = frames.length;
		result.bytes = out;
		checkShares(out, expect.bytes, "alloc_space");

		// Click the zoom site: it then spans the whole width, the other sites are gone.
		const target = frames.find((f) => f.name === expect.zoom && !f.faded);
		if (!target) fail(`no frame ${expect.zoom} to click`);
		const box = await page.locator("#canvas").boundingBox();
		await page.mouse.move(box.x + target.x + target.w / 2, box.y + target.y + 9);
		const tip = await page.locator("#tip").textContent();
		if (!tip.includes(expect.zoom) || !tip.includes("of all")) fail(`tooltip says: ${tip}`);
		result.tooltip = tip;
		await page.mouse.click(box.x + target.x + target.w / 2, box.y + target.y + 9);
		({ frames, out } = await shares(page));
		const zoomed = frames.find((f) => f.name === expect.zoom && !f.faded);
		const width = box.width;
		if (!zoomed || Math.abs(zoomed.w - width) > 2)
			fail(`after the click ${expect.zoom} is ${zoomed ? zoomed.w : 0}px wide, not ${width}`);
		for (const name of Object.keys(expect.bytes))
			if (name !== expect.zoom && out[name]) fail(`after zooming, ${name} is still drawn`);
		result.zoomed_width = zoomed.w;
		await page.screenshot({ path: shotPath.replace(/\.png$/, "-zoomed.png") });
		await page.click("#reset");

		// Search: highlighted and summed.
		await page.fill("#search", expect.search);
		const matched = await page.evaluate(() => window.allocscopeMatched);
		const text = await page.locator("#matched").textContent();
		if (Math.abs(matched.share - expect.bytes[expect.search]) > 0.0005)
			fail(`search ${expect.search} matched ${matched.share}, expected ` +
			     `${expect.bytes[expect.search]} (${text})`);
		if (!text.startsWith("matched ")) fail(`the match line says: ${text}`);
		const hits = await page.locator("#sites tr.hit td.name").allTextContents();
		if (!hits.includes(expect.search)) fail(`the table does not highlight ${expect.search}`);
		result.matched = text;

		// Objects: the widths follow alloc_objects.
		await page.selectOption("#type", expect.objects_type);
		({ out } = await shares(page));
		result.objects = out;
		checkShares(out, expect.objects, expect.objects_type);
		const head = await page.locator("#sites thead").textContent();
		if (!head.includes(expect.objects_type)) fail(`the table still shows ${head}`);

		await page.screenshot({ path: shotPath, fullPage: true });
		if (foreign.length) fail("the page requested: " + foreign.join(", "));
		if (errors.length) fail("page errors: " + errors.join("; "));
	} finally {
		await browser.close();
	}
	console.log(JSON.stringify(result));
})().catch((e) => fail(e.stack || String(e)));

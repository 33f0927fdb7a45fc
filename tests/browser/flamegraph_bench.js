// How a flame graph page behaves in headless Chromium (tests/bench/report.py): milliseconds
// from navigation to the first drawing, for a zoom (a click on the widest frame under the
// root) to redraw, and for a search over every frame to highlight and sum. Prints JSON.
//
//   node flamegraph_bench.js PAGE.html
"use strict";
const path = require("path");
const { chromium } = require("playwright-core");

(async () => {
	const browser = await chromium.launch({
		executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
		args: ["--no-sandbox", "--disable-gpu", "--no-first-run"],
	});
	try {
		const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
		await page.route("**/*", (r) => (r.request().url().startsWith("file://") ? r.continue() : r.abort()));
		const start = Date.now();
		await page.goto("file://" + path.resolve(process.argv[2]));
		await page.waitForFunction(() => window.allocscopeReady === true, null, { timeout: 300000 });
		const load_ms = Date.now() - start;
		const result = await page.evaluate(() => {
			const frames = window.allocscopeFrames.filter((f) => f.y === 18);
			const widest = frames.sort((a, b) => b.w - a.w)[0];
			const canvas = document.getElementById("canvas"), box = canvas.getBoundingClientRect();
			let t = performance.now();
			canvas.dispatchEvent(new MouseEvent("click", { clientX: box.left + widest.x + widest.w / 2,
				clientY: box.top + widest.y + 9, bubbles: true }));
			const zoom_ms = performance.now() - t;
			const search = document.getElementById("search");
			search.value = "method_1";
			t = performance.now();
			search.dispatchEvent(new Event("input"));
			const search_ms = performance.now() - t;
			return { zoom_ms, search_ms, drawn: window.allocscopeFrames.length };
		});
		const nodes = await page.evaluate(() => JSON.parse(document.getElementById("profile-data").textContent).nodes.n.length);
		console.log(JSON.stringify({ load_ms, nodes, ...result }));
	} finally {
		await browser.close();
	}
})().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });

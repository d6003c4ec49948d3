// Runs javascript/sloth-hints.js in jsdom on top of the A1111 stand-in's script.js and prints
// what it did as JSON (tests/test_hints_js.py asserts on it). Usage: node hints_harness.js <hints.js>
"use strict";
const fs = require("fs");
const path = require("path");
const { JSDOM } = require("jsdom");

const ROOT = path.resolve(__dirname, "..", "..");
const hintsFile = process.argv[2] || path.join(ROOT, "javascript", "sloth-hints.js");
const dom = new JSDOM("<!DOCTYPE html><body><gradio-app></gradio-app></body>", { runScripts: "outside-only" });
const { window } = dom;
window.eval(fs.readFileSync(path.join(ROOT, "tests", "standins", "a1111", "javascript", "script.js"), "utf8"));
window.eval(fs.readFileSync(hintsFile, "utf8"));
window.startObserving();
const doc = window.document;
const app = doc.querySelector("gradio-app");
const settle = () => new Promise(resolve => window.setTimeout(resolve, 0));  // observer callbacks have run

// What gradio 3.41 renders for the controls we hint (the parts that matter: ids, labels, inputs).
function slider(id, label) {
    return `<div id="${id}" class="block gradio-slider"><div class="wrap"><div class="head"><label><span>${label}</span>` +
        `</label><input type="number"></div><input type="range"></div></div>`;
}
function checkbox(id, label) {
    return `<div id="${id}" class="block gradio-checkbox"><label><input type="checkbox"><span>${label}</span></label></div>`;
}
function accordion(tab) {
    const p = `script_${tab}_sloth_`;
    return `<div id="${p}enabled" class="input-accordion block"><div class="label-wrap"><span>Sloth</span>` +
        `<input type="checkbox" id="${p}enabled-visible-checkbox"></div><div class="accordion-body">` +
        `<div class="row"><span class="plain">section</span>${checkbox(p + "tile__enabled", "Enable Near-sighted Tile")}` +
        `${slider(p + "tile__tile_size", "Tile size")}</div></div></div>`;
}

function titles(root) {
    const out = {};
    [root, ...root.querySelectorAll("[id]")].filter(el => el.id).forEach(el => {
        out[el.id] = { self: el.title, parts: [...el.querySelectorAll("span, input, label")].map(n => n.title) };
    });
    return out;
}

function counting(fn) {
    const counts = { getElementById: 0, querySelectorAll: 0, closest: 0 };
    const wrapped = [];
    for (const [proto, name] of [[window.Document.prototype, "getElementById"], [window.Element.prototype, "querySelectorAll"],
                                 [window.Element.prototype, "closest"], [window.DocumentFragment.prototype, "querySelectorAll"]]) {
        const original = proto[name];
        proto[name] = function(...args) { counts[name] += 1; return original.apply(this, args); };
        wrapped.push([proto, name, original]);
    }
    return fn().then(() => { for (const [proto, name, original] of wrapped) proto[name] = original; return counts; });
}

(async () => {
    const result = {};
    app.innerHTML = '<textarea id="txt2img_prompt"></textarea><div id="txt2img_gallery"></div>';
    await settle();
    // the UI appears (one batch, as gradio mounts it)
    const holder = doc.createElement("div");
    holder.innerHTML = accordion("txt2img") + accordion("img2img");
    app.appendChild(holder);
    await settle();
    result.first = titles(holder);
    // gradio re-renders a control's label (a new node inside an existing control)
    const head = doc.querySelector("#script_txt2img_sloth_tile__tile_size .head");
    head.innerHTML = '<label><span>Tile size</span></label><input type="number">';
    await settle();
    result.rerendered = titles(doc.getElementById("script_txt2img_sloth_tile__tile_size"));
    // progress polling: 40 batches, each adding one node outside our accordion
    const gallery = doc.getElementById("txt2img_gallery");
    result.polling = await counting(async () => {
        for (let i = 0; i < 40; i++) {
            gallery.innerHTML = `<div class="progress"><span class="progress-text">${i}%</span></div>`;
            await settle();
        }
    });
    result.polling.batches = 40;
    result.polling.addedNodes = 40;
    process.stdout.write(JSON.stringify(result));
})().catch(err => { console.error(err); process.exit(1); });

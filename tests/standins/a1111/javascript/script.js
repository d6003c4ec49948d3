// Stand-in for the UI-update part of A1111 v1.10.1 `script.js` (written from its documented
// behaviour, not its code): `gradioApp()`, and the callback queues `onUiUpdate(cb)` (cb gets the
// MutationRecord list of every mutation batch), `onAfterUiUpdate(cb)` (cb gets nothing, run once
// 200 ms after the last batch) and `onUiLoaded(cb)` (once, when #txt2img_prompt first exists).
// One MutationObserver watches gradioApp() with {childList: true, subtree: true}, set up on
// DOMContentLoaded (tests call `startObserving()`, since their document is already loaded).
// Exceptions in callbacks are logged and never stop the others.
var uiUpdateCallbacks = [];
var uiAfterUpdateCallbacks = [];
var uiLoadedCallbacks = [];
var uiAfterUpdateTimeout = null;
var executedOnLoaded = false;

function gradioApp() {
    const elems = document.getElementsByTagName("gradio-app");
    const elem = elems.length == 0 ? document : elems[0];
    if (elem !== document) elem.getElementById = function(id) { return document.getElementById(id); };
    return elem.shadowRoot ? elem.shadowRoot : elem;
}

function onUiUpdate(callback) { uiUpdateCallbacks.push(callback); }
function onAfterUiUpdate(callback) { uiAfterUpdateCallbacks.push(callback); }
function onUiLoaded(callback) { uiLoadedCallbacks.push(callback); }

function executeCallbacks(queue, arg) {
    for (const callback of queue) {
        try { callback(arg); } catch (e) { console.error("error running callback", e); }
    }
}

function startObserving() {
    const observer = new MutationObserver(function(records) {
        if (!executedOnLoaded && gradioApp().querySelector("#txt2img_prompt")) {
            executedOnLoaded = true;
            executeCallbacks(uiLoadedCallbacks);
        }
        executeCallbacks(uiUpdateCallbacks, records);
        clearTimeout(uiAfterUpdateTimeout);
        uiAfterUpdateTimeout = setTimeout(function() { executeCallbacks(uiAfterUpdateCallbacks); }, 200);
    });
    observer.observe(gradioApp(), {childList: true, subtree: true});
    return observer;
}

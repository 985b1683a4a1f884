// The review mode: decide on candidates with the keyboard (every key also a button), add the
// figures the detector missed, and save the decisions as labels in the MIDOG.json layout
// (midog/results/labels.py describes the file). Decisions are kept in the browser's storage
// under the result's content hash, so they survive a reload, a closed tab and a page made
// again from the same result, and a page of another result never picks them up.
(function () {
  "use strict";
  const V = window.midogViewer;
  const D = V.D, P = V.P, R = D.review;
  const NS = "http://www.w3.org/2000/svg";
  const KEY = "midog-review:" + R.hash;
  const BOX_PX = 50; // the MIDOG.json box round each point
  const order = R.order; // the candidates offered for review, best first
  const offered = new Set(order);

  // --- state, saved at every change -----------------------------------------------------
  function load() {
    try {
      const s = JSON.parse(localStorage.getItem(KEY));
      if (s && s.decisions && Array.isArray(s.added) && Array.isArray(s.history)) return s;
    } catch (err) { /* a damaged entry: start again rather than break the page */ }
    return { decisions: {}, added: [], history: [] };
  }
  const state = load();
  let storageNote = "";
  function save() {
    state.updated = new Date().toISOString();
    state.progress = progressText();
    try {
      localStorage.setItem(KEY, JSON.stringify(state));
      storageNote = "";
    } catch (err) {
      storageNote = "the browser refused to store the decisions (" + err.name + "): save the labels (s) before closing";
    }
  }

  // --- marks: decided candidates and added figures, by shape and colour ------------------
  const marks = document.createElementNS(NS, "g");
  marks.id = "marks";
  V.world.appendChild(marks);
  const SHAPES = {
    y: (x, y, r) => "M" + (x - r) + " " + (y - r) + "h" + 2 * r + "v" + 2 * r + "h" + -2 * r + "Z", // square
    n: (x, y, r) => "M" + (x - r) + " " + (y - r) + "L" + (x + r) + " " + (y + r) + "M" + (x + r) + " " + (y - r) + "L" + (x - r) + " " + (y + r), // cross
    u: (x, y, r) => "M" + x + " " + (y - r) + "L" + (x + r) + " " + y + "L" + x + " " + (y + r) + "L" + (x - r) + " " + y + "Z", // diamond
    a: (x, y, r) => SHAPES.y(x, y, r) + "M" + (x - r / 2) + " " + y + "h" + r + "M" + x + " " + (y - r / 2) + "v" + r, // square with a plus
  };
  let sel = null; // {c: candidate index} or {a: index into state.added}
  let drawnAt = null;
  function mark(kind, x, y, r, attrs) {
    const e = document.createElementNS(NS, "path");
    e.setAttribute("d", SHAPES[kind](x, y, r));
    e.setAttribute("class", "mark " + kind);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    marks.appendChild(e);
  }
  function drawMarks() {
    marks.textContent = "";
    const r = V.ringRadius() * 1.45;
    for (const i in state.decisions) mark(state.decisions[i], P.x[i], P.y[i], r, { "data-i": i });
    state.added.forEach((p, k) => mark("a", p[0], p[1], r, { "data-a": k, class: "mark a" + (sel && sel.a === k ? " focus" : "") }));
    drawnAt = V.view.s;
  }
  V.onRender.push(() => { if (drawnAt !== V.view.s) drawMarks(); });
  marks.addEventListener("pointerdown", (e) => {
    const k = e.target.getAttribute("data-a"), i = e.target.getAttribute("data-i");
    if (k !== null) select({ a: +k });
    else if (i !== null) select({ c: +i });
  });
  V.world.querySelector("#points").addEventListener("click", (e) => {
    const i = e.target.getAttribute("data-i");
    if (i !== null) sel = { c: +i };
  });

  // --- moving between candidates -------------------------------------------------------
  let pos = -1; // where j / k stand in `order`
  function select(s) {
    sel = s;
    if (s.c !== undefined) {
      const at = order.indexOf(s.c);
      if (at >= 0) pos = at;
      V.goTo(s.c);
    } else {
      V.goTo(null);
      const p = state.added[s.a];
      V.centreOn(p[0], p[1], Math.max(V.view.s, 1));
    }
    drawMarks();
    show();
  }
  function step(delta, undecidedOnly) {
    if (!order.length) return;
    for (let tries = 0; tries < order.length; tries++) {
      pos = undecidedOnly ? (pos + 1) % order.length : Math.min(order.length - 1, Math.max(0, pos + delta));
      if (!undecidedOnly || !(order[pos] in state.decisions)) return select({ c: order[pos] });
    }
    note("every offered candidate is decided");
  }

  // --- deciding, adding, undoing ---------------------------------------------------------
  function decide(kind) {
    if (sel === null) return note("choose a candidate first: j for the best one");
    if (sel.a !== undefined) {
      if (kind !== "n") return note("an added figure is a mitotic figure; n removes it");
      const p = state.added.splice(sel.a, 1)[0];
      state.history.push({ t: "r", k: sel.a, p: p });
      sel = null;
    } else {
      const was = state.decisions[sel.c];
      state.history.push({ t: "d", i: sel.c, was: was === undefined ? null : was });
      state.decisions[sel.c] = kind;
    }
    changed();
  }
  function undo() {
    const h = state.history.pop();
    if (!h) return note("nothing to undo");
    if (h.t === "d") {
      if (h.was === null) delete state.decisions[h.i];
      else state.decisions[h.i] = h.was;
      sel = { c: h.i };
    } else if (h.t === "a") {
      state.added.pop();
      sel = null;
    } else {
      state.added.splice(h.k, 0, h.p);
      sel = { a: h.k };
    }
    changed();
  }
  let adding = false;
  function startAdding() {
    adding = !adding;
    V.viewer.classList.toggle("adding", adding);
    note(adding ? "click the missed mitotic figure's centre (a again: cancel)" : "");
  }
  V.onPointDown = (e) => {
    if (!adding) return false;
    const [x, y] = V.toWorld(e.clientX, e.clientY);
    state.added.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
    state.history.push({ t: "a" });
    sel = { a: state.added.length - 1 };
    V.goTo(null);
    startAdding();
    changed();
    return true;
  };
  function changed() {
    save();
    drawMarks();
    show();
  }

  // --- labels out ----------------------------------------------------------------------
  function entry(x, y, extra) {
    const h = BOX_PX / 2;
    return Object.assign({ image_id: 1, bbox: [x - h, y - h, x + h, y + h] }, extra);
  }
  function labels() {
    const annotations = [], unsure = [];
    const decided = Object.keys(state.decisions).map(Number).sort((a, b) => a - b);
    for (const i of decided) {
      const kind = state.decisions[i];
      const extra = { source: "candidate", candidate: i, probability: P.p === null ? null : P.p[i] };
      if (kind === "u") unsure.push(entry(P.x[i], P.y[i], extra));
      else annotations.push(entry(P.x[i], P.y[i], Object.assign({ category_id: kind === "y" ? 1 : 2 }, extra)));
    }
    for (const p of state.added) annotations.push(entry(p[0], p[1], { category_id: 1, source: "added" }));
    annotations.forEach((a, k) => { a.id = k + 1; });
    return {
      format: "midog review labels",
      images: [{ id: 1, file_name: D.image, width: D.width, height: D.height, spacing_mm: D.spacing_mm }],
      categories: [{ id: 1, name: "mitotic figure" }, { id: 2, name: "not mitotic figure" }],
      annotations: annotations,
      unsure: unsure,
      review: { result_sha256: R.hash, page: D.name, saved: new Date().toISOString(), offered: order.length, floor: R.floor },
    };
  }
  function download() {
    const blob = new Blob([JSON.stringify(labels(), null, 1)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = R.labels_file;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    note("saved " + R.labels_file + " (the browser's downloads folder)");
  }

  // --- what the panel shows ------------------------------------------------------------
  function progressText() {
    let decided = 0;
    for (const i of order) decided += i in state.decisions;
    return decided + " of " + order.length + " decided, " + state.added.length + " added";
  }
  const NAMES = { y: "mitotic figure", n: "not a mitotic figure", u: "unsure" };
  function show() {
    document.getElementById("review-progress").textContent = progressText();
    let what = "no candidate chosen (j: the best one)";
    if (sel && sel.a !== undefined) what = "added figure " + (sel.a + 1);
    else if (sel) {
      const i = sel.c, d = state.decisions[i];
      what = "candidate " + (i + 1) + (P.p === null ? "" : ", p " + P.p[i].toPrecision(4)) + (offered.has(i) ? ", " + (order.indexOf(i) + 1) + " of " + order.length : ", not offered") + ": " + (d ? NAMES[d] : "undecided");
    }
    document.getElementById("review-current").textContent = what;
    if (storageNote) note(storageNote);
  }
  function note(text) {
    document.getElementById("review-note").textContent = text;
  }
  const help = document.getElementById("review-help");
  const ACTIONS = {
    j: () => step(1), k: () => step(-1), J: () => step(1, true),
    y: () => decide("y"), n: () => decide("n"), u: () => decide("u"), z: undo,
    a: startAdding, s: download, "?": () => { help.hidden = !help.hidden; },
    Escape: () => { help.hidden = true; if (adding) startAdding(); },
  };
  // The page's own clock: from the key event to the next painted frame, for tests and for
  // anyone wondering whether a big slide keeps up.
  const keyTimes = (window.midogKeyTimes = []);
  document.addEventListener("keydown", (e) => {
    if (!e.ctrlKey && !e.metaKey && !e.altKey && !e.target.closest("input") && ACTIONS[e.key]) {
      e.preventDefault();
      ACTIONS[e.key]();
    }
    requestAnimationFrame(() => keyTimes.push({ key: e.key, ms: performance.now() - e.timeStamp }));
  });
  for (const b of document.querySelectorAll("#review-box button[data-key], #review-help button[data-key]")) {
    b.addEventListener("click", () => ACTIONS[b.dataset.key]());
  }
  window.midogReview = { labels: labels, state: state, key: KEY };
  document.getElementById("review-floor").textContent = R.floor === null ? "every candidate, in file order" :
    "candidates with p ≥ " + R.floor + ", best first";
  drawMarks();
  show();
  document.body.dataset.ready = "1"; // for tests and scripts: the page has drawn itself
})();

// The review page's viewer: tiles of the slide's pyramid under an SVG of the candidates, the
// tissue outline and the hotspot; pan by dragging, zoom with the wheel, +/- and 0 (fit).
// Everything it shows comes from the JSON in #review-data (midog/results/review.py); counts at
// each threshold are precomputed there, the page only recounts the candidates to show them.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("review-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  const viewer = document.getElementById("viewer");
  const base = document.getElementById("tiles-base");
  const fine = document.getElementById("tiles-fine");
  const overlay = document.getElementById("overlay");
  const world = document.getElementById("world");
  const slider = document.getElementById("threshold");
  const P = D.points;
  const n = P.x.length;
  const RING_PX = 7; // a candidate's ring on screen, at least
  // ... and at high zoom a ring round the cell, sized in µm like QuPath's detection circles.
  const RING_MM = 0.006;
  const ringRadius = () => Math.max(RING_PX / view.s, RING_MM / D.spacing_mm[0]);
  const MAX_SCALE = 8; // screen px per level-0 px
  const view = { s: 1, x: 0, y: 0 }; // scale, and the level-0 point at the viewer's top-left
  const V = (window.midogViewer = { onRender: [], onPointDown: null });

  function svg(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  document.getElementById("title").textContent = D.name;
  document.getElementById("image-name").textContent = D.image + " · " + D.width + " × " + D.height + " px";

  // --- overlay -------------------------------------------------------------------------
  world.appendChild(svg("path", { d: D.tissue_path, class: "tissue" }));
  const ring = svg("g", { id: "points" });
  const dots = [];
  for (let i = 0; i < n; i++) {
    const c = svg("circle", { cx: P.x[i], cy: P.y[i], r: RING_PX, "data-i": i });
    const p = P.p === null ? "" : " p=" + P.p[i].toPrecision(4);
    c.appendChild(svg("title", {})).textContent = "candidate " + (i + 1) + p + (P.tissue[i] ? "" : " (off tissue)");
    dots.push(c);
    ring.appendChild(c);
  }
  world.appendChild(ring);
  const square = D.hotspot.shape === "square";
  const hotspot = svg(square ? "rect" : "ellipse", { class: "hotspot" });
  world.appendChild(hotspot);
  const spotLabel = svg("text", { class: "hotspot-label", "text-anchor": "middle" }); // its count, above it
  world.appendChild(spotLabel);

  // --- tiles ---------------------------------------------------------------------------
  const last = D.levels.length - 1;
  const shown = new Map(); // "k/c/r" -> img
  function exists(k, c, r) {
    const have = D.levels[k].have;
    return have === null || have.charCodeAt(r * D.levels[k].cols + c) === 49; // "1"
  }
  function place(img, k, c, r) {
    const L = D.levels[k], T = D.tile, ds = L.ds;
    const w = Math.min(T, L.w - c * T) * ds, h = Math.min(T, L.h - r * T) * ds;
    // Rounded outward by a pixel so that neighbouring tiles leave no hairline gap.
    const x0 = Math.floor((c * T * ds - view.x) * view.s), y0 = Math.floor((r * T * ds - view.y) * view.s);
    img.style.left = x0 + "px";
    img.style.top = y0 + "px";
    img.style.width = Math.ceil((c * T * ds + w - view.x) * view.s) - x0 + 1 + "px";
    img.style.height = Math.ceil((r * T * ds + h - view.y) * view.s) - y0 + 1 + "px";
  }
  function want(k, into, keys) {
    const L = D.levels[k], span = D.tile * L.ds;
    const W = viewer.clientWidth, H = viewer.clientHeight;
    const c0 = Math.max(0, Math.floor(view.x / span)), c1 = Math.min(L.cols - 1, Math.floor((view.x + W / view.s) / span));
    const r0 = Math.max(0, Math.floor(view.y / span)), r1 = Math.min(L.rows - 1, Math.floor((view.y + H / view.s) / span));
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        if (!exists(k, c, r)) continue;
        const key = k + "/" + c + "/" + r;
        keys.add(key);
        let img = shown.get(key);
        if (!img) {
          img = document.createElement("img");
          img.alt = "";
          img.draggable = false;
          img.src = D.tiles + "/" + k + "/" + c + "_" + r + D.ext;
          shown.set(key, img);
          into.appendChild(img);
        }
        place(img, k, c, r);
      }
    }
  }
  let drawnScale = null;
  function render() {
    // The coarsest level whose pixels are no larger than the screen's.
    let k = 0;
    while (k < last && D.levels[k].ds * view.s > 1) k++;
    const keys = new Set();
    want(0, base, keys); // the whole slide, coarse, under everything: no blank while tiles load
    if (k > 0) want(k, fine, keys);
    for (const [key, img] of shown) {
      if (!keys.has(key)) {
        img.remove();
        shown.delete(key);
      }
    }
    world.setAttribute("transform", "scale(" + view.s + ") translate(" + -view.x + " " + -view.y + ")");
    if (drawnScale !== view.s) {
      spotLabel.setAttribute("font-size", 16 / view.s);
      spotLabel.setAttribute("dy", -6 / view.s);
      const r = ringRadius();
      for (const c of dots) c.setAttribute("r", r);
      drawnScale = view.s;
    }
    scaleBar();
    for (const f of V.onRender) f();
  }
  function scaleBar() {
    const mmPerScreenPx = D.spacing_mm[0] / view.s;
    const target = 100 * mmPerScreenPx; // about 100 px long
    const steps = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20];
    const mm = steps.reduce((best, v) => (v <= target ? v : best), steps[0]);
    document.getElementById("scale-line").style.width = mm / mmPerScreenPx + "px";
    document.getElementById("scale-text").textContent = mm >= 1 ? mm + " mm" : Math.round(mm * 1000) + " µm";
    // A microscope's 40x objective shows about 0.25 µm per screen pixel.
    document.getElementById("magnification").textContent = "≈ " + +(10 / (mmPerScreenPx * 1000)).toPrecision(2) + "x";
    minimapView();
  }

  // --- minimap: the whole slide, the view's rectangle on it; a click goes there ---------
  const mini = document.getElementById("minimap"), miniImg = document.getElementById("minimap-img");
  const miniView = document.getElementById("minimap-view");
  const MINI_PX = 180;
  const miniScale = MINI_PX / Math.max(D.width, D.height);
  mini.style.width = D.width * miniScale + "px";
  mini.style.height = D.height * miniScale + "px";
  miniImg.src = D.thumb;
  function minimapView() {
    const W = viewer.clientWidth / view.s, H = viewer.clientHeight / view.s;
    const x0 = Math.max(0, view.x), y0 = Math.max(0, view.y);
    const x1 = Math.min(D.width, view.x + W), y1 = Math.min(D.height, view.y + H);
    miniView.style.left = x0 * miniScale + "px";
    miniView.style.top = y0 * miniScale + "px";
    miniView.style.width = Math.max(2, (x1 - x0) * miniScale) + "px";
    miniView.style.height = Math.max(2, (y1 - y0) * miniScale) + "px";
  }
  mini.addEventListener("pointerdown", (e) => {
    e.stopPropagation(); // not a drag of the slide
    const b = mini.getBoundingClientRect();
    centreOn((e.clientX - b.left) / miniScale, (e.clientY - b.top) / miniScale, view.s);
  });

  // --- navigation ----------------------------------------------------------------------
  function fitScale() {
    return Math.min(viewer.clientWidth / D.width, viewer.clientHeight / D.height) * 0.95;
  }
  function fit() {
    view.s = fitScale();
    view.x = (D.width - viewer.clientWidth / view.s) / 2;
    view.y = (D.height - viewer.clientHeight / view.s) / 2;
    render();
  }
  function zoomAt(mx, my, factor) {
    const s = Math.min(MAX_SCALE, Math.max(fitScale() / 4, view.s * factor));
    const wx = view.x + mx / view.s, wy = view.y + my / view.s;
    view.s = s;
    view.x = wx - mx / s;
    view.y = wy - my / s;
    render();
  }
  function centreOn(x, y, s) {
    view.s = s;
    view.x = x - viewer.clientWidth / 2 / s;
    view.y = y - viewer.clientHeight / 2 / s;
    render();
  }
  let focused = null;
  function goTo(i) {
    if (focused !== null) dots[focused].classList.remove("focus");
    focused = i;
    if (i === null) return;
    dots[i].classList.add("focus");
    centreOn(P.x[i], P.y[i], Math.max(view.s, 1));
  }
  viewer.addEventListener("wheel", (e) => {
    e.preventDefault();
    const box = viewer.getBoundingClientRect();
    zoomAt(e.clientX - box.left, e.clientY - box.top, Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });
  let drag = null;
  viewer.addEventListener("pointerdown", (e) => {
    if (e.target.closest("#controls, #review-help")) return;
    if (V.onPointDown && V.onPointDown(e)) return; // the review mode's "add a figure here"

    drag = { x: e.clientX, y: e.clientY };
    viewer.setPointerCapture(e.pointerId);
    viewer.classList.add("dragging");
  });
  viewer.addEventListener("pointermove", (e) => {
    if (!drag) return;
    view.x -= (e.clientX - drag.x) / view.s;
    view.y -= (e.clientY - drag.y) / view.s;
    drag = { x: e.clientX, y: e.clientY };
    render();
  });
  const stop = () => { drag = null; viewer.classList.remove("dragging"); };
  viewer.addEventListener("pointerup", stop);
  viewer.addEventListener("pointercancel", stop);
  viewer.addEventListener("dblclick", (e) => {
    const box = viewer.getBoundingClientRect();
    zoomAt(e.clientX - box.left, e.clientY - box.top, 2);
  });
  const PAN = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest("input")) return; // the slider keeps its arrows
    const W = viewer.clientWidth, H = viewer.clientHeight;
    if (e.key === "+" || e.key === "=") zoomAt(W / 2, H / 2, 2);
    else if (e.key === "-") zoomAt(W / 2, H / 2, 0.5);
    else if (e.key === "0") fit();
    else if (PAN[e.key]) {
      view.x += PAN[e.key][0] * W / 4 / view.s; // a quarter of the view per press
      view.y += PAN[e.key][1] * H / 4 / view.s;
      render();
    } else return;
    e.preventDefault();
  });
  document.getElementById("zoom-in").onclick = () => zoomAt(viewer.clientWidth / 2, viewer.clientHeight / 2, 2);
  document.getElementById("zoom-out").onclick = () => zoomAt(viewer.clientWidth / 2, viewer.clientHeight / 2, 0.5);
  document.getElementById("zoom-fit").onclick = fit;
  ring.addEventListener("click", (e) => {
    const i = e.target.getAttribute("data-i");
    if (i !== null) goTo(+i);
  });
  window.addEventListener("resize", render);

  // --- gallery -------------------------------------------------------------------------
  const gallery = document.getElementById("gallery");
  const figures = [];
  for (const g of D.gallery) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = g.src;
    img.alt = "candidate " + (g.i + 1);
    fig.appendChild(img);
    const cap = document.createElement("figcaption");
    cap.textContent = P.p === null ? "#" + (g.i + 1) : "p " + P.p[g.i].toPrecision(4); // 0.9996, not a saturated 1.000
    fig.appendChild(cap);
    fig.title = "show candidate " + (g.i + 1) + " on the slide";
    fig.dataset.i = g.i;
    fig.onclick = () => goTo(g.i);
    gallery.appendChild(fig);
    figures.push(fig);
  }
  document.getElementById("gallery-note").textContent =
    D.gallery.length < D.gallery_total ? "(best " + D.gallery.length + " of " + D.gallery_total + ")" : "(" + D.gallery_total + ")";

  // --- threshold and counts ------------------------------------------------------------
  const num = (v, digits) => (v === null ? "–" : v.toFixed(digits));
  function update() {
    const k = +slider.value;
    const t = D.thresholds[k];
    const entry = D.counts[k];
    let above = 0, counted = 0;
    for (let i = 0; i < n; i++) {
      const m = t === null ? P.mitotic[i] === 1 : P.p[i] > t;
      above += m;
      counted += m && P.tissue[i] === 1;
      dots[i].setAttribute("class", (m ? "m" : "n") + (P.tissue[i] ? "" : " out") + (i === focused ? " focus" : ""));
    }
    for (const fig of figures) fig.className = (t === null ? P.mitotic[+fig.dataset.i] === 1 : P.p[+fig.dataset.i] > t) ? "m" : "n";
    if (counted !== entry.figures) console.error("review page: live count " + counted + " differs from the precomputed " + entry.figures);
    document.getElementById("threshold-value").textContent = t === null ? "as in the file" : t.toFixed(2);
    document.getElementById("count-above").textContent = above;
    document.getElementById("count-figures").textContent = counted;
    document.getElementById("count-tissue").textContent = D.tissue_area_mm2.toFixed(2) + " mm²";
    document.getElementById("count-per-mm2").textContent = num(entry.per_mm2, 2);
    const h = entry.hotspot;
    document.getElementById("count-hotspot-label").textContent = "hotspot (" + +D.hotspot.area_mm2.toPrecision(4) + " mm² " + D.hotspot.shape + ")";
    document.getElementById("count-hotspot").textContent = h === null ? "–" : h.count;
    document.getElementById("count-hotspot-per-mm2").textContent = h === null ? "–" : h.per_mm2.toFixed(2);
    document.getElementById("count-score").textContent = entry.score === null ? "–" : entry.score;
    document.getElementById("count-hotspot-tissue").textContent = h === null ? "–" : +h.in_tissue_mm2.toPrecision(4) + " mm² (" + Math.round(100 * h.tissue_share) + "%)";
    document.getElementById("count-hotspot-tissue-density").textContent = h === null || h.per_mm2_of_tissue === null ? "–" : h.per_mm2_of_tissue.toFixed(2);
    if (h !== null && h.per_fields) document.getElementById("count-hotspot").textContent = h.per_fields;
    const notes = document.getElementById("count-notes");
    notes.textContent = "";
    for (const text of entry.notes) notes.appendChild(document.createElement("li")).textContent = text;
    spotLabel.style.display = hotspot.style.display;
    if (h !== null) {
      spotLabel.setAttribute("x", h.cx);
      spotLabel.setAttribute("y", h.cy - D.hotspot.ry);
      spotLabel.textContent = h.count + (h.tissue_share < 0.9 ? " (" + Math.round(100 * h.tissue_share) + "% tissue)" : "");
    }
    hotspot.style.display = h === null ? "none" : "";
    if (h !== null) {
      const rx = D.hotspot.rx, ry = D.hotspot.ry;
      const attrs = square ? { x: h.cx - rx, y: h.cy - ry, width: 2 * rx, height: 2 * ry } : { cx: h.cx, cy: h.cy, rx: rx, ry: ry };
      for (const a in attrs) hotspot.setAttribute(a, attrs[a]);
    }
  }
  slider.max = D.thresholds.length - 1;
  slider.value = D.start;
  slider.disabled = D.thresholds[0] === null;
  if (slider.disabled) document.getElementById("threshold-hint").textContent = "the result has no probabilities (2021 style): the points as the file names them";
  slider.addEventListener("input", update);
  document.getElementById("show-below").addEventListener("change", (e) => overlay.classList.toggle("hide-n", !e.target.checked));

  // What the review mode (review_mode.js) builds on.
  Object.assign(V, { D, P, n, view, viewer, world, dots, render, centreOn, goTo, ringRadius,
    focused: () => focused, toWorld: (cx, cy) => { const b = viewer.getBoundingClientRect(); return [view.x + (cx - b.left) / view.s, view.y + (cy - b.top) / view.s]; } });
  update();
  fit();
})();

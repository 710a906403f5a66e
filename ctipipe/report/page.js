// ctireport's page: draws the data of <script id="data"> (see ctipipe/report/model.py).
// Everything that came from the wire reaches the page through textContent,
// SVG text or canvas text, never as markup.
'use strict';
(function () {
  const D = JSON.parse(document.getElementById('data').textContent);
  const R = D.rows, P = D.pairs, BODIES = D.bodies, S = D.sessions;
  const N = R.t.length;
  const KIND = ['client', 'server', 'event'];
  const ROW = 22;            // px per ladder row
  const OVERSCAN = 8;        // rows drawn beyond the visible ones
  const MAX_HEIGHT = 15e6;   // px: browsers cap an element's height (Firefox near 17.9M)
  const LANE_C = 215, LANE_S = 575, LINK_X = 595, LINK_STEP = 10, LATENCY_X = 660, WIDTH = 840;
  const MAX_LISTED = 500;    // unanswered requests listed
  const CHECK_X = 150, CHECK_CHARS = 93;  // a finding's text on its row: from here, this many characters
  const BINS = 120;          // rate plot bins, at most (fewer for few rows: one per 4 rows)
  const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
    '#7f7f7f', '#bcbd22', '#17becf'];
  const OUTCOME_COLOR = { client: '#2e8b57', server: '#e08a1e', relay: '#7f7f7f', error: '#c0392b' };

  // --- small helpers --------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const key in attrs || {}) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function sv(tag, attrs, text) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const key in attrs || {}) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // Controls that could disguise text (bidi overrides, C0/C1, line separators) shown as \u escapes.
  const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
  const shown = (text) => String(text).replace(UNSAFE,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  function sorted(value) {  // keys sorted at every depth, for JSON.stringify
    if (Array.isArray(value)) return value.map(sorted);
    if (value && typeof value === 'object') {
      const out = {};
      for (const key of Object.keys(value).sort()) out[key] = sorted(value[key]);
      return out;
    }
    return value;
  }
  const asJSON = (value) => shown(JSON.stringify(sorted(value), null, 4));
  const fixed3 = (v) => (v === null || v === undefined ? '-' : v.toFixed(3));
  function rank(values, fraction) {  // nearest rank, as ctistat (stages/replies.py)
    if (!values.length) return null;
    return values[Math.max(0, Math.min(values.length - 1, Math.ceil(fraction * values.length) - 1))];
  }
  const round3 = (v) => (v === null ? null : Math.round(v * 1000) / 1000);
  const utc = (rel) => new Date((D.t0 + rel) * 1000).toISOString().replace('T', ' ').replace('Z', ' UTC');
  const plural = (n, word) => n + ' ' + word + (n === 1 ? '' : 's');
  const classColor = (c) => PALETTE[c % PALETTE.length];
  const outcomeOf = (s) => (s.by === null ? 'open' : (s.by in OUTCOME_COLOR ? s.by : 'error'));
  // what an unanswered request shows: the protocol never answers some (logout, a second starttls)
  const noReply = (p) => (P.e[p] ? 'no reply' : 'no reply expected');
  const CHECK = D.classes.indexOf('check');  // the class of cticheck's findings (check events), -1 if none

  // pair index of each row (request or reply), -1 for none
  const rowPair = new Int32Array(N).fill(-1);
  for (let p = 0; p < P.q.length; p++) {
    rowPair[P.q[p]] = p;
    if (P.a[p] >= 0) rowPair[P.a[p]] = p;
  }

  // --- the filter -------------------------------------------------------------------
  const state = { cls: -1, side: -1, sess: -1, text: '', scale: 'rows', pps: 100, selected: -1 };
  let view = new Int32Array(0);          // rows shown, in order
  let position = new Int32Array(N);      // row -> index in view, -1 when filtered out
  let searchable = null;                 // lower-case text of each row, made on first search

  function matches(row) {
    if (state.sess >= 0 && R.s[row] !== state.sess) return false;
    if (state.side >= 0 && R.k[row] !== state.side) return false;
    if (state.cls >= 0 && R.c[row] !== state.cls) return false;
    if (state.text) {
      if (searchable === null) {
        searchable = new Array(N);
        for (let i = 0; i < N; i++) {
          searchable[i] = (D.labels[R.l[i]] + '\n' + JSON.stringify(BODIES[i])).toLowerCase();
        }
      }
      if (!searchable[row].includes(state.text)) return false;
    }
    return true;
  }

  function applyFilter() {
    const rows = [];
    position.fill(-1);
    for (let row = 0; row < N; row++) {
      if (matches(row)) { position[row] = rows.length; rows.push(row); }
    }
    view = Int32Array.from(rows);
    $('count').textContent = view.length + ' of ' + plural(N, 'row');
    layout();
    drawLatency();
    drawRate();
    markChosenBar();
  }

  function buildFilter() {
    const cls = $('f-class'), sess = $('f-session');
    const counts = new Int32Array(D.classes.length);
    for (let i = 0; i < N; i++) counts[R.c[i]]++;
    const order = D.classes.map((_, i) => i).sort((a, b) => (D.classes[a] < D.classes[b] ? -1 : 1));
    for (const c of order) cls.append(el('option', { value: c }, shown(D.classes[c]) + ' (' + counts[c] + ')'));
    S.forEach((s, i) => sess.append(el('option', { value: i }, 'session ' + s.conn)));
    cls.onchange = () => { state.cls = +cls.value; applyFilter(); };
    $('f-side').onchange = (e) => { state.side = +e.target.value; applyFilter(); };
    sess.onchange = () => { state.sess = +sess.value; applyFilter(); };
    let typing = 0;
    $('f-text').oninput = (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => { state.text = e.target.value.toLowerCase(); applyFilter(); }, 150);
    };
    $('f-scale').onchange = (e) => {
      const value = e.target.value;
      state.scale = value === 'rows' ? 'rows' : 'time';
      state.pps = value === 'rows' ? state.pps : +value;
      layout();
    };
  }

  function chooseSession(index) {
    state.sess = index;
    $('f-session').value = String(index);
    applyFilter();
    $('ladder').scrollTop = 0;
  }

  // --- overview --------------------------------------------------------------------------
  function overview() {
    const facts = $('facts');
    const fact = (name, value) => { facts.append(el('dt', {}, name), el('dd', {}, value)); };
    if (D.producers.length) fact('recorded by', shown(D.producers.join(', ')));
    fact('time', N ? utc(0) + ' to ' + utc(D.span) + ' (' + D.span.toFixed(3) + ' s)' : '-');
    const ended = {};
    let messages = [0, 0], bytes = [0, 0], lost = 0, gapped = 0;
    for (const s of S) {
      const how = outcomeOf(s);
      ended[how] = (ended[how] || 0) + 1;
      messages = [messages[0] + s.messages[0], messages[1] + s.messages[1]];
      bytes = [bytes[0] + s.sent[0], bytes[1] + s.sent[1]];
      lost += s.lost;
      gapped += s.lost ? 1 : 0;
    }
    const words = { client: 'closed by the client', server: 'closed by the server',
      relay: 'closed by the relay', error: 'ended by an error', open: 'still open when the input ended' };
    fact('sessions', plural(S.length, 'session') + ': ' + Object.keys(ended).map(
      (k) => ended[k] + ' ' + words[k]).join(', ') +
      (D.not_relayed.length ? '; ' + D.not_relayed.length + ' more never opened (could not be relayed)' : ''));
    fact('messages', 'client ' + messages[0] + ' (' + bytes[0] + ' bytes), server ' + messages[1] +
      ' (' + bytes[1] + ' bytes)');
    const tls = {};
    for (const s of S) {
      if (!s.tls) continue;
      const t = s.tls, legs = ['client', 'server'].map((leg) => (t[leg] && typeof t[leg] === 'object'
        ? leg + ' ' + t[leg].version + ' ' + t[leg].cipher : '')).filter(Boolean).join(', ');
      const text = t.how + (t.intercepted ? ', intercepted' + (legs ? ': ' + legs : '') : ', passed on encrypted');
      (tls[text] = tls[text] || []).push(s.conn);
    }
    const tlsText = Object.keys(tls).map((k) => shown(k) + ' (' + (tls[k].length > 8
      ? plural(tls[k].length, 'session') : 'session ' + tls[k].join(', ')) + ')');
    fact('TLS', tlsText.length ? tlsText.join('; ') : 'none (plain TCP)');
    fact('gaps', lost ? lost + ' records lost in ' + plural(gapped, 'session') +
      ' (the relay could not write them fast enough; the sessions themselves were not affected)' : 'none: every record is here');
    const errors = S.filter((s) => s.error !== null).map((s) => 'session ' + s.conn + ': ' + shown(s.error))
      .concat(D.not_relayed.map((e) => 'not relayed: ' + shown(e.error)));
    fact('errors', errors.length ? errors.slice(0, 10).join('; ') +
      (errors.length > 10 ? '; and ' + (errors.length - 10) + ' more' : '') : 'none');
    const counts = new Int32Array(D.classes.length);
    for (let i = 0; i < N; i++) if (R.k[i] !== 2) counts[R.c[i]]++;
    const busiest = D.classes.map((name, c) => [counts[c], name]).filter((x) => x[0])
      .sort((a, b) => b[0] - a[0]).slice(0, 8);
    fact('busiest classes', busiest.map((x) => shown(x[1]) + ' ' + x[0]).join(', '));
    if (D.findings.length) {
      const count = D.findings.reduce((sum, f) => sum + f[1], 0);
      fact('findings', plural(count, 'protocol finding') + ' (cticheck): ' +
        D.findings.map((f) => shown(f[0]) + ' ' + f[1]).join(', '));
    }
    if (D.skipped) fact('skipped', plural(D.skipped, 'record') + ' of a wrong shape');
  }

  // --- sessions timeline ---------------------------------------------------------------------
  let bars = [];
  function timeline() {
    const svg = $('timeline'), width = 1000, left = 60, span = Math.max(D.span, 1e-6);
    const lanes = [];                 // per lane, when it is free again
    const laneOf = S.map((s) => {
      let lane = lanes.findIndex((end) => end < s.start);
      if (lane < 0) { lane = lanes.length; lanes.push(0); }
      lanes[lane] = s.end;
      return lane;
    });
    const height = Math.max(2, Math.min(8, Math.floor(600 / Math.max(1, lanes.length))));
    svg.setAttribute('width', width);
    svg.setAttribute('height', lanes.length * (height + 1) + 20);
    const x = (t) => left + (t / span) * (width - left - 10);
    bars = S.map((s, i) => {
      const bar = sv('rect', { class: 'bar', x: x(s.start), y: laneOf[i] * (height + 1),
        width: Math.max(2, x(s.end) - x(s.start)), height: height,
        fill: OUTCOME_COLOR[outcomeOf(s)] || '#4a7fc0' });
      if (s.lost || s.error !== null) { bar.setAttribute('stroke', '#c0392b'); bar.setAttribute('stroke-dasharray', '3 2'); }
      bar.append(sv('title', {}, 'session ' + s.conn + ': ' + shown(s.client) + ' > ' + shown(s.server) + ', ' +
        (s.by === null ? 'still open' : 'closed by ' + shown(s.by)) + (s.lost ? ', ' + s.lost + ' records lost' : '') +
        (s.error !== null ? ', error: ' + shown(s.error) : '')));
      bar.addEventListener('click', () => chooseSession(i));
      return bar;
    });
    svg.append(...bars);
    const axis = lanes.length * (height + 1) + 14;
    svg.append(sv('text', { x: left, y: axis, class: 'muted' }, '+0 s'),
      sv('text', { x: width - 10, y: axis, 'text-anchor': 'end' }, '+' + D.span.toFixed(3) + ' s'));
  }
  function markChosenBar() {
    bars.forEach((bar, i) => bar.classList.toggle('chosen', i === state.sess));
  }

  // --- ladder, drawn only where it is seen ------------------------------------------------------
  let ys = new Float64Array(1), total = 0;
  const box = $('ladder'), spacer = $('spacer'), ladder = $('ladder-svg');

  function layout() {
    const n = view.length;
    ys = new Float64Array(n + 1);
    let pps = state.pps;
    if (state.scale === 'time') {
      let gaps = 0;
      for (let i = 1; i < n; i++) gaps += Math.max(0, R.t[view[i]] - R.t[view[i - 1]]);
      if (gaps * pps + n * ROW > MAX_HEIGHT) pps = Math.max(0, (MAX_HEIGHT - n * ROW) / gaps);
    }
    for (let i = 1; i <= n; i++) {
      ys[i] = ys[i - 1] + ROW;
      if (state.scale === 'time' && i < n) ys[i] += Math.max(0, R.t[view[i]] - R.t[view[i - 1]]) * pps;
    }
    total = ys[n] + ROW;
    spacer.style.height = total + 'px';
    box.style.height = Math.min(total + 4, Math.max(300, window.innerHeight * 0.7)) + 'px';
    $('scale-note').textContent = state.scale === 'time' ? (pps === state.pps ? '' : '(' + pps.toPrecision(3) + ' px/s to fit)') : '';
    draw();
  }

  function firstBelow(y) {  // index of the first row whose top is at or below y
    let lo = 0, hi = view.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (ys[mid] < y) lo = mid + 1; else hi = mid; }
    return lo;
  }

  let pending = false;
  box.addEventListener('scroll', () => {
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); }
  });
  window.addEventListener('resize', () => draw());

  function draw() {
    const top = box.scrollTop, height = box.clientHeight;
    const first = Math.max(0, firstBelow(top) - 1 - OVERSCAN);
    const last = Math.min(view.length, firstBelow(top + height) + OVERSCAN);
    ladder.setAttribute('width', WIDTH);
    ladder.setAttribute('height', height);
    ladder.style.top = top + 'px';
    const parts = [sv('line', { class: 'lane', x1: LANE_C, x2: LANE_C, y1: 0, y2: height }),
      sv('line', { class: 'lane', x1: LANE_S, x2: LANE_S, y1: 0, y2: height })];
    const many = S.length > 1;
    for (let i = first; i < last; i++) parts.push(drawRow(view[i], ys[i] - top, many));
    for (let p = 0; p < P.q.length; p++) {  // request -> reply links crossing the drawn rows
      if (P.a[p] < 0) continue;
      const i = position[P.q[p]], j = position[P.a[p]];
      if (i < 0 || j < 0 || j < first || i >= last) continue;
      const y1 = ys[i] - top + ROW / 2, y2 = ys[j] - top + ROW / 2;
      const x = LINK_X + P.col[p] * LINK_STEP;
      parts.push(sv('path', { class: 'link', d: 'M' + LANE_S + ' ' + y1 + 'H' + x + 'V' + y2 + 'H' + LANE_S }));
    }
    ladder.replaceChildren(...parts);
  }

  function drawRow(row, y, many) {
    const kind = R.k[row], s = S[R.s[row]];
    const check = kind === 2 && R.c[row] === CHECK;
    const g = sv('g', { class: 'row ' + KIND[kind] + (check ? ' check' : '') + (row === state.selected ? ' selected' : ''),
      transform: 'translate(0 ' + y + ')' });
    g.dataset.row = row;
    g.append(sv('rect', { class: 'bg', x: 0, y: 0, width: WIDTH, height: ROW, fill: 'transparent' }));
    // time since the session opened when one is shown (as ctipretty --time relative), else since the first record
    g.append(sv('text', { x: 4, y: 15 }, '+' + (R.t[row] - (state.sess >= 0 ? s.start : 0)).toFixed(6)));
    if (many) g.append(sv('text', { x: 100, y: 15, class: 'muted' }, '#' + s.conn));
    const label = shown(D.labels[R.l[row]]);
    if (check) {  // a finding of cticheck, about the row before it: marked, left-aligned, the whole text on hover
      g.append(sv('rect', { class: 'mark', x: 0, y: 0, width: 3, height: ROW }),
        sv('text', { x: CHECK_X, y: 15 }, label.length > CHECK_CHARS ? label.slice(0, CHECK_CHARS - 1) + '…' : label),
        sv('title', {}, label));
      return g;
    }
    if (kind === 2) {
      g.append(sv('text', { x: (LANE_C + LANE_S) / 2, y: 15, 'text-anchor': 'middle' }, '— ' + label + ' —'));
      return g;
    }
    const from = kind === 0 ? LANE_C : LANE_S, to = kind === 0 ? LANE_S : LANE_C, dir = kind === 0 ? -1 : 1;
    g.append(sv('line', { x1: from, x2: to + dir * 6, y1: 17, y2: 17, 'stroke-width': 1.5 }),
      sv('polygon', { points: to + ',17 ' + (to + dir * 7) + ',13 ' + (to + dir * 7) + ',21' }),
      sv('text', { x: (LANE_C + LANE_S) / 2, y: 12, 'text-anchor': 'middle' },
        label.length > 48 ? label.slice(0, 47) + '…' : label));
    const p = rowPair[row];
    if (p >= 0 && row === P.a[p]) {
      g.append(sv('text', { x: LATENCY_X, y: 15, class: 'late' }, fixed3(P.ms[p]) + ' ms'));
    } else if (p >= 0 && P.a[p] < 0) {
      g.append(sv('text', { x: LATENCY_X, y: 15, class: P.e[p] ? 'noreply' : 'muted' }, noReply(p)));
    }
    g.append(sv('text', { x: WIDTH - 4, y: 15, 'text-anchor': 'end', class: 'muted' }, R.z[row] + ' B'));
    return g;
  }

  ladder.addEventListener('click', (event) => {
    const g = event.target.closest('.row');
    if (g) select(+g.dataset.row, false);
  });

  function select(row, scroll) {
    if (position[row] < 0) {  // filtered out: show everything again
      state.cls = state.side = state.sess = -1;
      state.text = '';
      for (const id of ['f-class', 'f-side', 'f-session']) $(id).value = '-1';
      $('f-text').value = '';
      applyFilter();
    }
    state.selected = row;
    if (scroll) box.scrollTop = Math.max(0, ys[position[row]] - box.clientHeight / 3);
    draw();
    showDetail(row);
  }

  function showDetail(row) {
    const detail = $('detail'), s = S[R.s[row]], p = rowPair[row];
    const kind = R.k[row];
    const head = 'session ' + s.conn + ' · ' + (kind === 2 ? 'event' : kind === 0 ? 'client > server' : 'server > client') +
      ' · +' + (R.t[row] - s.start).toFixed(6) + ' s · ' + utc(R.t[row]) + (kind === 2 ? '' : ' · ' + R.z[row] + ' bytes');
    const parts = [el('div', { class: 'sub' }, head)];
    if (p >= 0) {
      const other = row === P.q[p] ? P.a[p] : P.q[p];
      const text = other >= 0 ? (row === P.q[p] ? 'its reply' : 'its request') + ' after ' + fixed3(P.ms[p]) + ' ms'
        : P.e[p] ? 'no reply' : 'no reply expected: the protocol does not answer this request';
      const go = el('button', { type: 'button' }, other < 0 ? noReply(p) : 'go to ' + (row === P.q[p] ? 'reply' : 'request'));
      if (other < 0) go.disabled = true; else go.onclick = () => select(other, true);
      parts.push(el('div', {}, text), go);
    }
    parts.push(el('pre', { id: 'json' }, asJSON(BODIES[row])));
    detail.replaceChildren(...parts);
  }

  // --- latency ----------------------------------------------------------------------------------
  function chosenPairs() {
    const out = [];
    for (let p = 0; p < P.q.length; p++) {
      if (position[P.q[p]] >= 0 || (P.a[p] >= 0 && position[P.a[p]] >= 0)) out.push(p);
    }
    return out;
  }

  function drawLatency() {
    const pairs = chosenPairs(), byClass = new Map();
    for (const p of pairs) {
      const c = R.c[P.q[p]];
      if (!byClass.has(c)) byClass.set(c, { values: [], none: 0, moot: 0 });  // moot: no reply expected
      const figures = byClass.get(c);
      if (P.a[p] >= 0) figures.values.push(P.ms[p]); else if (P.e[p]) figures.none++; else figures.moot++;
    }
    const classes = [...byClass.keys()].sort((a, b) => (D.classes[a] < D.classes[b] ? -1 : D.classes[a] > D.classes[b] ? 1 : 0));
    const body = $('latency-table').tBodies[0];
    body.replaceChildren(...classes.map((c) => {
      const v = byClass.get(c).values.sort((a, b) => a - b);
      const tr = el('tr');
      const name = el('td', {}, '');
      name.append(el('span', { class: 'swatch' }), shown(D.classes[c]));
      name.firstChild.style.background = classColor(c);
      tr.append(name, el('td', {}, String(v.length)),
        ...[0.5, 0.95, 0.99].map((f) => el('td', {}, fixed3(round3(rank(v, f))))),
        el('td', {}, fixed3(v.length ? round3(v[v.length - 1]) : null)),
        el('td', {}, String(byClass.get(c).none)), el('td', {}, String(byClass.get(c).moot)));
      tr.onclick = () => { state.cls = c; $('f-class').value = String(c); applyFilter(); };
      return tr;
    }));
    const list = $('unanswered'), none = pairs.filter((p) => P.a[p] < 0 && P.e[p]);
    const moot = pairs.filter((p) => P.a[p] < 0 && !P.e[p]).length;  // not listed: no fault
    list.replaceChildren(...none.slice(0, MAX_LISTED).map((p) => {
      const row = P.q[p], s = S[R.s[row]];
      const li = el('li', {}, 'session ' + s.conn + ' +' + (R.t[row] - s.start).toFixed(6) + ' s: ' + shown(D.labels[R.l[row]]));
      li.onclick = () => select(row, true);
      return li;
    }));
    const others = moot + ' that the protocol never answers (no reply expected)';
    $('unanswered-note').textContent = none.length ? plural(none.length, 'request') + ' without a reply' +
      (none.length > MAX_LISTED ? ' (the first ' + MAX_LISTED + ' listed)' : '') + (moot ? ', not counting ' + others : '') + ':'
      : 'Every request got its reply' + (moot ? ', but for ' + others : '') + '.';
    scatter(pairs.filter((p) => P.a[p] >= 0));
    cdf(classes.map((c) => [c, byClass.get(c).values]).filter((x) => x[1].length));
  }

  function canvas(id, width, height) {
    const c = $(id), ratio = window.devicePixelRatio || 1;
    c.width = width * ratio; c.height = height * ratio;
    c.style.width = width + 'px'; c.style.height = height + 'px';
    const g = c.getContext('2d');
    g.scale(ratio, ratio);
    g.font = '11px sans-serif';
    g.clearRect(0, 0, width, height);
    return g;
  }

  function axes(g, width, height, pad, xText, yText) {
    g.strokeStyle = '#999';
    g.beginPath(); g.moveTo(pad, 4); g.lineTo(pad, height - pad); g.lineTo(width - 4, height - pad); g.stroke();
    g.fillStyle = '#555';
    g.fillText(yText[1], 2, 12); g.fillText(yText[0], 2, height - pad);
    g.fillText(xText[0], pad, height - pad + 14);
    g.textAlign = 'right'; g.fillText(xText[1], width - 4, height - pad + 14); g.textAlign = 'left';
  }

  function scatter(pairs) {
    const width = 560, height = 240, pad = 44, g = canvas('scatter', width, height);
    if (!pairs.length) { g.fillText('no request with a reply here', pad, height / 2); return; }
    let t0 = Infinity, t1 = -Infinity, top = 0;
    for (const p of pairs) { const t = R.t[P.q[p]]; t0 = Math.min(t0, t); t1 = Math.max(t1, t); top = Math.max(top, P.ms[p]); }
    const span = Math.max(t1 - t0, 1e-6);
    axes(g, width, height, pad, ['+' + t0.toFixed(3) + ' s', '+' + t1.toFixed(3) + ' s'], ['0 ms', top.toFixed(3) + ' ms']);
    for (const p of pairs) {
      g.fillStyle = classColor(R.c[P.q[p]]);
      g.fillRect(pad + (R.t[P.q[p]] - t0) / span * (width - pad - 8), height - pad - P.ms[p] / (top || 1) * (height - pad - 8) - 1.5, 3, 3);
    }
  }

  function cdf(series) {
    const width = 420, height = 240, pad = 44, g = canvas('cdf', width, height);
    if (!series.length) { g.fillText('no latency here', pad, height / 2); return; }
    let lo = Infinity, hi = 0;
    for (const [, v] of series) { lo = Math.min(lo, Math.max(v[0], 1e-3)); hi = Math.max(hi, v[v.length - 1]); }
    const l0 = Math.log10(lo), l1 = Math.max(Math.log10(Math.max(hi, 1e-3)), l0 + 1e-6);
    axes(g, width, height, pad, [lo.toPrecision(3) + ' ms', hi.toPrecision(3) + ' ms (log)'], ['0', '1']);
    for (const [c, v] of series) {
      g.strokeStyle = classColor(c);
      g.beginPath();
      v.forEach((ms, i) => {
        const x = pad + (Math.log10(Math.max(ms, 1e-3)) - l0) / (l1 - l0) * (width - pad - 8);
        const y = height - pad - (i + 1) / v.length * (height - pad - 8);
        if (i) g.lineTo(x, y); else g.moveTo(x, y);
      });
      g.stroke();
    }
  }

  // --- rate -----------------------------------------------------------------------------------------
  function drawRate() {
    const width = 1000, height = 200, pad = 60, g = canvas('rate', width, height);
    const bytes = $('rate-what').value === 'bytes';
    if (!view.length) return;
    const bins = Math.max(10, Math.min(BINS, Math.round(view.length / 4)));
    const t0 = R.t[view[0]], span = Math.max(R.t[view[view.length - 1]] - t0, 1e-3), step = span / bins;
    const series = [new Float64Array(bins), new Float64Array(bins)], gaps = [];
    for (const row of view) {
      const bin = Math.min(bins - 1, Math.floor((R.t[row] - t0) / step));
      if (R.k[row] === 2) { if (D.labels[R.l[row]].startsWith('gap')) gaps.push(R.t[row]); continue; }
      series[R.k[row]][bin] += bytes ? R.z[row] : 1;
    }
    let top = 0;
    for (const s of series) for (let i = 0; i < bins; i++) { s[i] /= step; top = Math.max(top, s[i]); }
    axes(g, width, height, pad, ['+' + t0.toFixed(3) + ' s', '+' + (t0 + span).toFixed(3) + ' s'],
      ['0', top.toPrecision(3) + (bytes ? ' B/s' : ' msg/s')]);
    const x = (t) => pad + (t - t0) / span * (width - pad - 8);
    g.strokeStyle = '#c0392b';
    for (const t of gaps) { g.beginPath(); g.moveTo(x(t), 4); g.lineTo(x(t), height - pad); g.stroke(); }
    ['#1f6fb2', '#b25a1f'].forEach((color, side) => {
      g.strokeStyle = color;
      g.beginPath();
      for (let i = 0; i < bins; i++) {
        const px = x(t0 + (i + 0.5) * step), py = height - pad - series[side][i] / (top || 1) * (height - pad - 8);
        if (i) g.lineTo(px, py); else g.moveTo(px, py);
      }
      g.stroke();
    });
    g.fillStyle = '#1f6fb2'; g.fillText('client', width - 110, 14);
    g.fillStyle = '#b25a1f'; g.fillText('server', width - 60, 14);
  }

  // --- the page ------------------------------------------------------------------------------
  document.title = shown(D.title || document.title);
  $('title').textContent = shown(D.title || 'ctireport');
  $('generator').textContent = shown(D.generator) + ' · ' + plural(N, 'row') + ' · ' + plural(S.length, 'session');
  $('redaction').textContent = D.redacted ? 'Credentials masked (as ctistrip --redact).'
    : 'Not redacted (--no-redact): this page holds the credentials of the capture.';
  if (!D.redacted) $('redaction').className = 'warn';
  $('rate-what').onchange = drawRate;
  overview();
  timeline();
  buildFilter();
  applyFilter();
  document.body.dataset.ready = 'true';
})();

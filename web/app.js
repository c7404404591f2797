// callgate's built-in page (docs/web.md). Plain JavaScript, no framework, no build step: it reads who the
// user is over REST, then everything it shows from one WebSocket subscription (snapshot, then
// notifications), resuming after a disconnect with `since` so nothing is missed and nothing is polled.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);

  // What the page holds: the resources of the subscription, keyed as the gateway keys them.
  const state = {
    user: null, // the /api/v2/me user, or null in open mode
    view: null, // 'wallboard' | 'agent'
    calls: new Map(), // `${deviceUri}|${id}` -> {call, dn, t0}
    devices: new Map(), // id -> device
    queues: new Map(), // id -> queue
    queuesSupported: true, // false once the gateway refused the queues topic
    epoch: null,
    seq: null,
    ws: null,
    subCounter: 0,
    sub: null, // the current subscription's name
    subTopics: null,
    pending: null, // a snapshot being received across `more` frames
    attempt: 0, // reconnect attempts since the last good subscription
    retryTimer: null,
    lastHeard: 0,
    connected: false,
    stopped: false, // logged out: do not reconnect
    opened: false, // whether the current socket got past its handshake
  };

  // The credentials typed at login, held in this page's memory only (never stored): a wall screen must
  // come back by itself after the gateway restarts, which forgets every session. Gone on reload or logout.
  let remembered = null;

  // ---- helpers ----

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null) continue;
        if (key === 'class') node.className = value;
        else if (key.startsWith('data-')) node.setAttribute(key, value);
        else node.setAttribute(key, value);
      }
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmtDuration(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    const mm = String(m).padStart(2, '0');
    const ss = String(s).padStart(2, '0');
    return h > 0 ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
  }

  // A cell whose text is the time since `t0` (ms since the epoch), kept current by the ticker.
  function tickingCell(t0, cls) {
    const td = el('td', { class: cls ? `num ${cls}` : 'num' });
    if (t0 !== null && t0 !== undefined) {
      td.setAttribute('data-t0', String(t0));
      td.textContent = fmtDuration(Date.now() - t0);
    } else {
      td.textContent = '—';
    }
    return td;
  }

  function tick() {
    const now = Date.now();
    for (const td of document.querySelectorAll('[data-t0]')) {
      td.textContent = fmtDuration(now - Number(td.getAttribute('data-t0')));
    }
    $('clock').textContent = new Date(now).toLocaleTimeString();
  }

  function utf8Base64(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = '';
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary);
  }

  // ---- the agent state a row shows ----

  const ORDER = { oncall: 0, ringing: 1, ready: 2, notready: 3, acw: 4, loggedout: 5 };
  const LABEL = {
    oncall: 'On a call',
    ringing: 'Ringing',
    ready: 'Ready',
    notready: 'Not Ready',
    acw: 'After Call Work',
    loggedout: 'Logged Out',
  };

  // The calls per device URI, built once per drawing (not once per device: a large floor has thousands).
  let callsByDevice = new Map();
  function indexCalls() {
    callsByDevice = new Map();
    for (const entry of state.calls.values()) {
      const list = callsByDevice.get(entry.call.deviceUri);
      if (list) list.push(entry);
      else callsByDevice.set(entry.call.deviceUri, [entry]);
    }
  }

  function liveCallsOf(device) {
    return callsByDevice.get(device.uri) || [];
  }

  // A device's state as a wallboard reads it: a call in progress comes first, then the agent state.
  function agentState(device) {
    const calls = liveCallsOf(device);
    const talking = calls.filter((c) => c.call.state !== 'Ringing');
    if (talking.length > 0) {
      const t0 = Math.min(...talking.map((c) => c.t0));
      return { key: 'oncall', t0 };
    }
    if (calls.length > 0) return { key: 'ringing', t0: Math.min(...calls.map((c) => c.t0)) };
    const us = device.userState || {};
    if (us.state === 'Ready') return { key: 'ready' };
    if (us.state === 'NotReady') {
      if (us.workMode === 'AfterCallWork') return { key: 'acw', reason: us.reason };
      return { key: 'notready', reason: us.reason || (us.displayName !== 'Not Ready' ? us.displayName : '') };
    }
    return { key: 'loggedout' };
  }

  // ---- rendering ----

  let renderScheduled = false;
  function scheduleRender() {
    if (renderScheduled) return;
    renderScheduled = true;
    // A burst of notifications (a snapshot's resume, a busy second) is drawn once.
    setTimeout(() => {
      renderScheduled = false;
      render();
    }, 30);
  }

  function fillBody(tbody, rows, columns, emptyText) {
    tbody.replaceChildren();
    if (rows.length === 0) {
      const tr = el('tr');
      tr.appendChild(el('td', { class: 'empty', colspan: String(columns) }, emptyText));
      tbody.appendChild(tr);
      return;
    }
    for (const row of rows) tbody.appendChild(row);
  }

  function participantsText(call) {
    const parts = call.participants || [];
    return {
      numbers: parts.map((p) => p.formattedPhoneNumber || p.phoneNumber).join(', '),
      locations: parts.map((p) => p.location || '').filter((l) => l).join(', '),
    };
  }

  function callRows(entries) {
    const sorted = [...entries].sort((a, b) => a.t0 - b.t0 || a.dn.localeCompare(b.dn));
    const shown = sorted.slice(0, 200);
    const rows = shown.map((entry) => {
      const call = entry.call;
      // A snapshot's call may come before its device is known (read from REST after the snapshot).
      const dn = entry.dn || dnOfUri(call.deviceUri);
      const tr = el('tr', {
        'data-call-id': call.id,
        'data-dn': dn,
        'data-state': call.state,
      });
      tr.appendChild(el('th', { scope: 'row' }, dn || '—'));
      const st = call.state === 'Ringing' ? 'ringing' : 'oncall';
      tr.appendChild(el('td', { class: `state state-${st}` }, call.state));
      tr.appendChild(el('td', null, call.callType || ''));
      tr.appendChild(tickingCell(entry.t0));
      const p = participantsText(call);
      tr.appendChild(el('td', { class: 'participants' }, p.numbers));
      tr.appendChild(el('td', { class: 'loc' }, p.locations));
      return tr;
    });
    if (sorted.length > shown.length) {
      const tr = el('tr');
      tr.appendChild(el('td', { class: 'empty', colspan: '6' }, `and ${sorted.length - shown.length} more`));
      rows.push(tr);
    }
    return rows;
  }

  function renderQueues() {
    const queues = [...state.queues.values()].sort((a, b) =>
      String(a.phoneNumber).localeCompare(String(b.phoneNumber)),
    );
    const rows = queues.map((q) => {
      const tr = el('tr', { 'data-queue-id': q.id, 'data-waiting': String(q.waitingCount ?? 0) });
      const name = q.server ? `${q.phoneNumber} (${q.server})` : q.phoneNumber;
      tr.appendChild(el('th', { scope: 'row' }, name));
      tr.appendChild(el('td', { class: 'num big' }, q.waitingCount ?? 0));
      // The longest wait ticks from the oldest waiting call's `since`, not from the last event.
      let oldest = null;
      for (const w of q.waiting || []) {
        const t = Date.parse(w.since);
        if (!Number.isNaN(t) && (oldest === null || t < oldest)) oldest = t;
      }
      tr.appendChild(tickingCell(oldest, 'big'));
      const today = q.today || {};
      const sl = today.serviceLevel;
      const slText = typeof sl === 'number' ? `${Math.round(sl)}%` : '—';
      const slClass = typeof sl === 'number' ? (sl >= 80 ? 'num big sl-good' : 'num big sl-bad') : 'num big';
      tr.appendChild(el('td', { class: slClass }, slText));
      tr.appendChild(el('td', { class: 'num' }, today.entered ?? 0));
      tr.appendChild(el('td', { class: 'num' }, today.abandoned ?? 0));
      return tr;
    });
    const empty = state.queuesSupported
      ? 'No queue has had a call yet'
      : 'This gateway does not publish queue statistics';
    fillBody($('queues-body'), rows, 6, empty);
  }

  function renderAgents() {
    const devices = [...state.devices.values()].map((d) => ({ device: d, st: agentState(d) }));
    devices.sort(
      (a, b) =>
        ORDER[a.st.key] - ORDER[b.st.key] ||
        (a.st.t0 ?? 0) - (b.st.t0 ?? 0) ||
        String(a.device.phoneNumber).localeCompare(String(b.device.phoneNumber)),
    );
    const counts = {};
    const rows = devices.map(({ device, st }) => {
      counts[st.key] = (counts[st.key] || 0) + 1;
      const tr = el('tr', { 'data-dn': device.phoneNumber, 'data-state': st.key });
      tr.appendChild(el('th', { scope: 'row' }, device.phoneNumber));
      tr.appendChild(el('td', null, device.agentId || ''));
      tr.appendChild(el('td', { class: `state state-${st.key}` }, LABEL[st.key]));
      tr.appendChild(el('td', { class: 'reason' }, st.reason || ''));
      tr.appendChild(tickingCell(st.key === 'oncall' || st.key === 'ringing' ? st.t0 : null));
      return tr;
    });
    fillBody($('agents-body'), rows, 5, 'No agents in scope');
    const list = $('agent-counts');
    list.replaceChildren();
    for (const key of Object.keys(ORDER)) {
      const li = el('li', { class: `state-${key}`, 'data-count': key });
      li.appendChild(el('b', null, counts[key] || 0));
      li.appendChild(document.createTextNode(LABEL[key]));
      list.appendChild(li);
    }
  }

  function renderMine() {
    const rows = [...state.devices.values()].map((device) => {
      const st = agentState(device);
      const tr = el('tr', { 'data-dn': device.phoneNumber, 'data-state': st.key });
      tr.appendChild(el('th', { scope: 'row' }, device.phoneNumber));
      tr.appendChild(el('td', { class: `state state-${st.key}` }, LABEL[st.key]));
      tr.appendChild(el('td', { class: 'reason' }, st.reason || ''));
      tr.appendChild(el('td', null, device.doNotDisturb === 'On' ? 'On' : 'Off'));
      tr.appendChild(tickingCell(st.key === 'oncall' || st.key === 'ringing' ? st.t0 : null));
      return tr;
    });
    fillBody($('my-devices-body'), rows, 5, 'No device is assigned to you');
    fillBody($('my-calls-body'), callRows(state.calls.values()), 6, 'No call in progress');
  }

  function render() {
    indexCalls();
    if (state.view === 'wallboard') {
      renderQueues();
      renderAgents();
      fillBody($('calls-body'), callRows(state.calls.values()), 6, 'No call in progress');
    } else if (state.view === 'agent') {
      renderMine();
    }
    const position = state.seq === null ? '' : ` · position ${state.seq}`;
    const queues = state.view === 'wallboard' ? ` · ${state.queues.size} queues` : '';
    $('status-line').textContent = `${state.calls.size} calls · ${state.devices.size} devices${queues}${position}`;
  }

  // ---- the resources ----

  function dnOfUri(uri) {
    for (const d of state.devices.values()) if (d.uri === uri) return d.phoneNumber;
    return '';
  }

  // `duration` is whole seconds as of the event that produced this version; the row ticks on from the
  // start that implies, by this browser's clock.
  function putCall(call, dn, into) {
    const key = `${call.deviceUri}|${call.id}`;
    if (call.state === 'Released') {
      into.delete(key);
      return;
    }
    const previous = into.get(key);
    const seconds = Number(call.duration) || 0;
    const t0 = previous ? previous.t0 : Date.now() - seconds * 1000;
    into.set(key, { call, dn: dn || (previous && previous.dn) || dnOfUri(call.deviceUri), t0 });
  }

  // A device that has had a call but no agent-state event has no device notification of its own; the
  // gateway lists it (REST) in the default state, and so does the page from its first call.
  function addDeviceOf(call, dn) {
    if (!call.deviceUri || !dn) return;
    const id = call.deviceUri.slice(call.deviceUri.lastIndexOf('/') + 1);
    if (state.devices.has(id)) return;
    state.devices.set(id, {
      id,
      phoneNumber: dn,
      uri: call.deviceUri,
      userState: { id: 'LoggedOut', displayName: 'Logged Out', state: 'LoggedOut' },
    });
  }

  function applySnapshotPart(frame, into) {
    for (const d of frame.devices || []) into.devices.set(d.id, d);
    for (const q of frame.queues || []) into.queues.set(q.id, q);
    into.rawCalls.push(...(frame.calls || []));
  }

  function finishSnapshot(pending) {
    state.devices = pending.devices;
    state.queues = pending.queues;
    const calls = new Map();
    const old = state.calls;
    state.calls = calls;
    for (const call of pending.rawCalls) {
      const key = `${call.deviceUri}|${call.id}`;
      const kept = old.get(key);
      // A call still in progress keeps the start it had, so its duration does not jump.
      if (kept && call.state !== 'Released') {
        calls.set(key, { call, dn: dnOfUri(call.deviceUri) || kept.dn, t0: kept.t0 });
      } else {
        putCall(call, dnOfUri(call.deviceUri), calls);
      }
    }
  }

  function applyNotification(frame) {
    const data = frame.data || {};
    switch (data.messageType) {
      case 'CallStateChangeMessage':
        if (data.call) {
          addDeviceOf(data.call, data.phoneNumber);
          putCall(data.call, data.phoneNumber, state.calls);
        }
        break;
      case 'DeviceStateChangeMessage':
        for (const d of data.devices || []) state.devices.set(d.id, d);
        break;
      case 'QueueStateChangeMessage':
        if (data.queue) state.queues.set(data.queue.id, data.queue);
        break;
      default:
        break;
    }
  }

  // ---- the WebSocket ----

  function banner(text) {
    const b = $('banner');
    if (text) {
      b.textContent = text;
      b.hidden = false;
    } else {
      b.textContent = '';
      b.hidden = true;
    }
  }

  function topics() {
    if (state.view === 'wallboard' && state.queuesSupported) return ['calls', 'devices', 'queues'];
    return ['calls', 'devices'];
  }

  function subscribe(ws) {
    state.subCounter += 1;
    state.sub = `page${state.subCounter}`;
    state.subTopics = topics();
    state.pending = null;
    const request = { type: 'subscribe', sub: state.sub, topics: state.subTopics };
    if (state.epoch !== null && state.seq !== null) request.since = { epoch: state.epoch, seq: state.seq };
    ws.send(JSON.stringify(request));
  }

  function connect() {
    if (state.stopped) return;
    clearTimeout(state.retryTimer);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}/api/v2/ws`);
    } catch (err) {
      retry(`Cannot connect: ${err.message}`);
      return;
    }
    state.ws = ws;
    state.opened = false;
    // Asked again on every connection: the gateway may have been upgraded to one that serves queues.
    state.queuesSupported = true;
    ws.onopen = () => {
      state.opened = true;
      state.lastHeard = Date.now();
      subscribe(ws);
    };
    ws.onmessage = (event) => {
      if (ws !== state.ws) return;
      state.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      onFrame(ws, frame);
    };
    ws.onclose = (event) => {
      if (ws !== state.ws) return;
      state.ws = null;
      state.connected = false;
      if (state.stopped) return;
      if (event.code === 4001) {
        recheckSession('Not logged in');
        return;
      }
      // 4008: the gateway dropped us for reading too slowly; 1001: it is shutting down; anything else:
      // the network. All the same: reconnect and resume from the last position seen.
      const why = event.code === 4008 ? 'Fell behind the live stream' : 'Disconnected from callgate';
      if (!state.opened) {
        // A refused handshake looks like a network failure to a page: ask whether the session is gone.
        recheckSession(why);
      } else {
        retry(why);
      }
    };
  }

  // After a refused handshake: a gateway that forgot the session (a restart) answers /api/v2/me 401; log
  // in again with the remembered credentials, else ask for them. Unreachable: keep retrying.
  async function recheckSession(why) {
    let status;
    try {
      status = (await fetch('/api/v2/me', { credentials: 'same-origin' })).status;
    } catch (err) {
      retry(why);
      return;
    }
    if (status !== 401 || state.user === null) {
      // callgate answers but refused the WebSocket: after a few tries, say what usually causes that.
      const hint =
        state.attempt >= 2
          ? 'callgate answers but refuses the live connection (open this page at the gateway\'s --base-url address)'
          : why;
      retry(hint);
      return;
    }
    if (remembered) {
      const response = await basicLogin(remembered.username, remembered.password).catch(() => null);
      if (response && response.ok) {
        state.csrf = response.headers.get('X-CSRF-TOKEN');
        retry(why);
        return;
      }
      if (response && response.status === 429) {
        retry(why);
        return;
      }
    }
    remembered = null;
    showLogin();
    banner('Your session has ended: please log in again.');
  }

  function basicLogin(username, password) {
    // Basic credentials on a REST request make the gateway open a session (its cookie is HttpOnly); the
    // WebSocket upgrade then carries that cookie.
    return fetch('/api/v2/me', {
      credentials: 'same-origin',
      headers: { Authorization: `Basic ${utf8Base64(`${username}:${password}`)}` },
    });
  }

  function retry(why) {
    state.attempt += 1;
    // Back off from half a second to ten, with jitter so a roomful of wallboards does not reconnect at once.
    const base = Math.min(10000, 500 * 2 ** Math.min(state.attempt - 1, 5));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    banner(`${why}. Reconnecting in ${Math.ceil(delay / 1000)} s… (the figures below may be out of date)`);
    state.retryTimer = setTimeout(connect, delay);
  }

  function onFrame(ws, frame) {
    switch (frame.type) {
      case 'subscribed':
        if (frame.sub !== state.sub) return;
        // For tests and the curious: how the last subscription started (a resume or a snapshot).
        document.body.setAttribute('data-subscribed', frame.resumed ? 'resumed' : 'snapshot');
        state.epoch = frame.epoch;
        state.seq = frame.seq;
        if (frame.resumed) {
          onSubscribed();
          addUnseenDevices();
        } else {
          state.pending = { devices: new Map(), queues: new Map(), rawCalls: [] };
          applySnapshotPart(frame, state.pending);
          if (!frame.more) {
            finishSnapshot(state.pending);
            state.pending = null;
            onSubscribed();
            addUnseenDevices();
          }
        }
        break;
      case 'snapshot':
        if (frame.sub !== state.sub || !state.pending) return;
        applySnapshotPart(frame, state.pending);
        if (!frame.more) {
          finishSnapshot(state.pending);
          state.pending = null;
          onSubscribed();
          addUnseenDevices();
        }
        break;
      case 'notification':
        state.epoch = frame.epoch;
        state.seq = frame.seq;
        applyNotification(frame);
        scheduleRender();
        break;
      case 'error':
        if (frame.sub === state.sub && state.subTopics.includes('queues') && !state.connected) {
          // A gateway without queues (or a role not allowed them) refuses the topic: go on without it.
          state.queuesSupported = false;
          subscribe(ws);
        } else if (frame.sub === state.sub && !state.connected && state.epoch !== null) {
          // A resume the gateway cannot serve: start again from a snapshot.
          state.epoch = null;
          state.seq = null;
          subscribe(ws);
        } else {
          $('status-line').textContent = `callgate refused a request: ${frame.message || frame.code}`;
        }
        break;
      default:
        break;
    }
  }

  function onSubscribed() {
    state.connected = true;
    state.attempt = 0;
    banner(null);
    render();
  }

  // The WebSocket snapshot carries the devices that have had an agent-state event; an access file's
  // devices that never had one, and those that only had calls, are listed by REST in their default state
  // (Logged Out): read once per subscription.
  // Only devices the page does not hold yet are added: anything newer has come, or will come, over the
  // socket, which always wins.
  async function addUnseenDevices() {
    try {
      const response = await fetch('/api/v2/devices', { credentials: 'same-origin' });
      if (!response.ok) return;
      const body = await response.json();
      let added = false;
      for (const device of body.devices || []) {
        if (!state.devices.has(device.id)) {
          const { calls, ...resource } = device;
          state.devices.set(device.id, resource);
          added = true;
        }
      }
      if (added) scheduleRender();
    } catch (err) {
      // Not reachable now: the next snapshot tries again.
    }
  }

  // A connection can die without a close (a cable pulled, a laptop asleep): ping and give up on silence.
  setInterval(() => {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - state.lastHeard > 45000) {
      ws.close();
      return;
    }
    ws.send('{"type":"ping"}');
  }, 15000);

  // ---- login and the view ----

  function hasRole(user, role) {
    return Array.isArray(user.roles) && user.roles.includes(role);
  }

  function showLogin() {
    state.stopped = true;
    if (state.ws) state.ws.close();
    state.ws = null;
    $('wallboard').hidden = true;
    $('agent-view').hidden = true;
    $('logout').hidden = true;
    $('who').textContent = '';
    $('login').hidden = false;
    $('username').focus();
  }

  function start(user) {
    state.user = user;
    state.stopped = false;
    state.epoch = null;
    state.seq = null;
    state.calls = new Map();
    state.devices = new Map();
    state.queues = new Map();
    $('login').hidden = true;
    const wall = user === null || hasRole(user, 'ROLE_SUPERVISOR') || hasRole(user, 'ROLE_ADMIN');
    state.view = wall ? 'wallboard' : 'agent';
    $('wallboard').hidden = !wall;
    $('agent-view').hidden = wall;
    document.body.setAttribute('data-view', state.view);
    if (user === null) {
      $('who').textContent = 'Open mode: no access file, everything is visible';
      $('logout').hidden = true;
    } else {
      const name = [user.firstName, user.lastName].filter((s) => s).join(' ') || user.userName;
      const roles = (user.roles || []).map((r) => r.replace('ROLE_', '').toLowerCase()).join(', ');
      $('who').textContent = `${name} (${user.userName}, ${roles})`;
      $('logout').hidden = false;
    }
    render();
    connect();
  }

  async function boot() {
    // Who am I: a session cookie from an earlier login answers /api/v2/me. Without one, /api/v2/devices
    // tells open mode (readable without credentials) from a gateway that wants a login.
    try {
      const me = await fetch('/api/v2/me', { credentials: 'same-origin' });
      if (me.ok) {
        start((await me.json()).user);
        return;
      }
      const probe = await fetch('/api/v2/devices', { credentials: 'same-origin' });
      if (probe.ok) {
        start(null);
        return;
      }
      showLogin();
    } catch (err) {
      banner('Cannot reach callgate. Retrying…');
      setTimeout(boot, 2000);
    }
  }

  async function login(event) {
    event.preventDefault();
    const username = $('username').value;
    const password = $('password').value;
    const error = $('login-error');
    error.textContent = '';
    if (!username || !password) {
      error.textContent = 'Enter your username and password.';
      return;
    }
    try {
      const response = await basicLogin(username, password);
      if (response.status === 429) {
        error.textContent = 'Too many failed attempts: wait a minute and try again.';
        return;
      }
      if (!response.ok) {
        error.textContent = 'Wrong username or password.';
        return;
      }
      state.csrf = response.headers.get('X-CSRF-TOKEN');
      remembered = { username, password };
      $('password').value = '';
      banner(null);
      start((await response.json()).user);
    } catch (err) {
      error.textContent = 'Cannot reach callgate.';
    }
  }

  async function logout() {
    state.stopped = true;
    remembered = null;
    try {
      const headers = state.csrf ? { 'X-CSRF-TOKEN': state.csrf } : {};
      await fetch('/callgate/logout', { method: 'POST', credentials: 'same-origin', headers });
    } catch (err) {
      // The gateway is unreachable: forgetting the page's state is all that can be done.
    }
    state.csrf = null;
    showLogin();
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    tick();
    setInterval(tick, 1000);
    boot();
  });
})();

// The browser client: plain JavaScript against the service's REST API and WebSocket, no build step.
'use strict';

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 30;
const REACTIONS = ['👍', '❤️', '😂', '🎉'];
const TOKEN_KEY = 'chat.token';
// Names learnt from tokens and the example users; the API only names Matrix participants.
const KNOWN_NAMES_KEY = 'chat.names';

const state = {
  token: null,
  me: null,
  conversations: new Map(), // id → conversation (as the API returns it, kept current by events)
  lastSeq: new Map(),       // id → last event seq applied; what `resume` sends after a reconnect
  resuming: new Set(),      // ids with a `resume` sent and not yet answered (`resumed` or `resync`)
  pending: new Map(),       // id → Map(seq → event) that arrived ahead of a gap
  loading: new Map(),       // id → promise of a conversation being fetched
  messages: new Map(),      // id → { byId: Map, hasMore, loaded }
  current: null,
  socket: null,
  socketOpen: false,
  reconnectDelay: 500,
  reconnectTimer: null,
  replyTo: null,
  editing: null,
  typingUntil: new Map(),   // userId → time its indicator expires
  lastTypingSent: 0,
  recorder: null,
  names: new Map(Object.entries(JSON.parse(localStorage.getItem(KNOWN_NAMES_KEY) || '{}'))),
};

// crypto.randomUUID needs a secure context; the service is often reached over plain http on a LAN address.
function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== 'string') node[k] = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

function rememberName(userId, name) {
  if (!userId || !name) return;
  state.names.set(userId.toLowerCase(), name);
  localStorage.setItem(KNOWN_NAMES_KEY, JSON.stringify(Object.fromEntries(state.names)));
}

function displayName(userId, conversation) {
  const id = (userId || '').toLowerCase();
  if (state.me && id === state.me.id) return 'You';
  const member = conversation?.members?.find((m) => m.user_id.toLowerCase() === id);
  if (member?.display_name) return member.display_name;
  if (member?.matrix_user_id) return member.matrix_user_id;
  return state.names.get(id) || id.slice(0, 8);
}

function conversationTitle(c) {
  if (c.name) return c.name;
  const others = (c.members || []).filter((m) => m.user_id.toLowerCase() !== state.me.id);
  if (others.length) return others.map((m) => displayName(m.user_id, c)).join(', ');
  return c.kind === 'direct' ? 'Direct conversation' : 'Group';
}

// ---------- HTTP ----------

class ApiError extends Error {
  constructor(status, code, detail) { super(detail || code || `HTTP ${status}`); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) { headers['Content-Type'] = 'application/json'; payload = JSON.stringify(body); }
  const response = await fetch(path, { method, headers, body: payload });
  if (response.status === 401) { signOut('Your session has expired or the token was not accepted.'); throw new ApiError(401, 'unauthorized'); }
  if (!response.ok) {
    let problem = {};
    try { problem = await response.json(); } catch { /* not problem+json */ }
    throw new ApiError(response.status, problem.code, problem.detail || problem.title);
  }
  return response.status === 204 ? null : response.json();
}

function mediaUrl(media) {
  // <audio>/<img> cannot send an Authorization header; the service accepts the token in the query for media.
  return `${media.url}?access_token=${encodeURIComponent(state.token)}`;
}

// ---------- sign-in ----------

function decodeToken(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch { return null; }
}

function useToken(token) {
  const claims = decodeToken(token);
  if (!claims?.sub) throw new Error('That does not look like an access token (no sub claim).');
  state.token = token;
  state.me = { id: claims.sub.toLowerCase(), name: claims.name || null };
  rememberName(state.me.id, state.me.name);
  sessionStorage.setItem(TOKEN_KEY, token);
}

async function showSignIn(message) {
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  let config = { development_sign_in: false };
  try { config = await (await fetch('/api/v1/web/config')).json(); } catch { /* offline: paste a token */ }
  $('dev-signin').hidden = !config.development_sign_in;
  $('token-signin').hidden = config.development_sign_in;
  if (config.development_sign_in && !$('dev-user-id').value) $('dev-user-id').value = uuid();
  if (config.development_sign_in) document.querySelectorAll('.presets button').forEach((b) => rememberName(b.dataset.user, b.dataset.name));
}

async function devSignIn(userId, name) {
  const response = await fetch('/api/v1/web/dev-token', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user_id: userId, display_name: name || null }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || 'Sign-in failed.');
  useToken(body.access_token);
  await start();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.socket) { state.socket.onclose = null; state.socket.close(); }
  clearTimeout(state.reconnectTimer);
  location.hash = '';
  location.reload();
  if (message) console.info(message);
}

// ---------- conversations ----------

function upsertConversation(c, { baseline } = {}) {
  const existing = state.conversations.get(c.id);
  const merged = existing ? { ...existing, ...c, members: c.members || existing.members } : c;
  state.conversations.set(c.id, merged);
  if (baseline && !state.lastSeq.has(c.id)) state.lastSeq.set(c.id, c.last_seq);
  return merged;
}

async function loadConversations() {
  let cursor = null;
  do {
    const page = await api('GET', `/api/v1/conversations?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    for (const c of page.conversations) {
      const known = state.conversations.has(c.id) && state.lastSeq.has(c.id);
      // A known conversation keeps its own seq and counts: the socket's replay brings it up to date.
      if (!known) upsertConversation(c, { baseline: true });
    }
    cursor = page.next_cursor;
  } while (cursor);
  // Members (and so names) come with the single-conversation read.
  await Promise.all([...state.conversations.values()].filter((c) => !c.members).map((c) => refreshConversation(c.id)));
  renderConversationList();
}

async function refreshConversation(id) {
  try {
    const c = await api('GET', `/api/v1/conversations/${id}`);
    const existing = state.conversations.get(id);
    // Counters move with events; take only what events do not carry.
    upsertConversation(existing ? { ...c, unread_count: existing.unread_count, last_message: existing.last_message, last_seq: existing.last_seq } : c,
      { baseline: true });
  } catch (e) {
    if (e.status === 404) forgetConversation(id); else throw e;
  }
}

function forgetConversation(id) {
  state.conversations.delete(id);
  state.lastSeq.delete(id);
  state.pending.delete(id);
  state.messages.delete(id);
  if (state.current === id) { state.current = null; renderCurrent(); }
  renderConversationList();
}

function previewText(c) {
  const m = c.last_message;
  if (!m) return 'No messages yet';
  const who = displayName(m.sender_id, c);
  if (m.deleted) return `${who}: message deleted`;
  const body = m.type === 'text' ? m.preview : ({ audio: '🎤 Voice message', image: '🖼 Image', file: '📎 File' }[m.type] || m.type);
  return `${who}: ${body || ''}`;
}

function renderConversationList() {
  const list = $('conversation-list');
  // The buttons are drawn anew on every change: a keyboard user's focus must move to the same conversation's new one.
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.conversation : null;
  const sorted = [...state.conversations.values()].sort((a, b) => String(b.last_activity_at).localeCompare(String(a.last_activity_at)));
  list.replaceChildren(...sorted.map((c) => {
    const unread = c.unread_count > 0 ? el('span', { class: 'unread', text: String(c.unread_count), 'aria-label': `${c.unread_count} unread` }) : null;
    return el('li', {},
      el('button', {
        type: 'button', 'data-conversation': c.id, 'aria-current': c.id === state.current ? 'true' : 'false',
        onclick: () => openConversation(c.id),
      }, el('span', { class: 'title', text: conversationTitle(c) }), unread || el('span'), el('span', { class: 'preview', text: previewText(c) })));
  }));
  $('no-conversations').hidden = sorted.length > 0;
  if (focused) list.querySelector(`button[data-conversation="${focused}"]`)?.focus();
}

async function createConversation(event) {
  event.preventDefault();
  const kind = document.querySelector('input[name=kind]:checked').value;
  const ids = $('create-members').value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
  const body = { kind, member_ids: ids };
  if (kind === 'group' && $('create-name').value.trim()) body.name = $('create-name').value.trim();
  try {
    const c = await api('POST', '/api/v1/conversations', body);
    upsertConversation(c, { baseline: true });
    $('create-members').value = '';
    $('create-name').value = '';
    $('new-conversation').open = false;
    renderConversationList();
    await openConversation(c.id);
  } catch (e) {
    showError(e);
  }
}

// ---------- messages ----------

function messageStore(id) {
  let store = state.messages.get(id);
  if (!store) { store = { byId: new Map(), hasMore: false, loaded: false }; state.messages.set(id, store); }
  return store;
}

async function loadLatest(id) {
  const page = await api('GET', `/api/v1/conversations/${id}/messages?limit=${PAGE_SIZE}`);
  const store = messageStore(id);
  for (const m of page.messages) store.byId.set(m.id, m);
  store.hasMore = page.has_more;
  store.loaded = true;
}

async function loadEarlier() {
  const id = state.current;
  const store = messageStore(id);
  const oldest = Math.min(...[...store.byId.values()].map((m) => m.seq));
  const scroller = $('messages-scroll');
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const page = await api('GET', `/api/v1/conversations/${id}/messages?before=${oldest}&limit=${PAGE_SIZE}`);
  for (const m of page.messages) store.byId.set(m.id, m);
  store.hasMore = page.has_more;
  if (state.current !== id) return;
  renderMessages();
  scroller.scrollTop = scroller.scrollHeight - fromBottom; // keep the reader's place
}

async function openConversation(id) {
  state.current = id;
  state.replyTo = null;
  state.editing = null;
  $('app').classList.add('in-conversation');
  renderConversationList();
  const store = messageStore(id);
  if (!store.loaded) {
    try { await loadLatest(id); } catch (e) { showError(e); }
  }
  if (state.current !== id) return;
  renderCurrent();
  scrollToBottom();
  markRead();
  $('message-input').focus();
}

function renderCurrent() {
  const c = state.conversations.get(state.current);
  $('conversation-view').hidden = !c;
  $('empty-state').hidden = !!c;
  if (!c) { $('app').classList.remove('in-conversation'); return; }
  $('conversation-title').textContent = conversationTitle(c);
  renderMembers();
  renderMessages();
  renderReplyBanner();
  renderTyping();
}

function renderMembers() {
  const c = state.conversations.get(state.current);
  const members = c.members || [];
  const myRole = c.my_role;
  const canManage = myRole === 'owner' || myRole === 'admin';
  $('members-summary').textContent = `Members (${members.length})`;
  $('add-member-form').hidden = !canManage || c.kind === 'direct';
  $('add-member-role').querySelector('option[value=admin]').disabled = myRole !== 'owner';
  $('member-list').replaceChildren(...members.map((m) => {
    const isMe = m.user_id.toLowerCase() === state.me.id;
    const name = displayName(m.user_id, c);
    const parts = [el('span', { text: name, title: m.matrix_user_id || m.user_id })];
    if (m.matrix_user_id) parts.push(el('span', { class: 'hint', text: '(Matrix)' }));
    if (myRole === 'owner' && !isMe && c.kind === 'group') {
      const select = el('select', { 'aria-label': `Role of ${name}`, onchange: async (e) => {
        try { await api('PATCH', `/api/v1/conversations/${c.id}/members/${m.user_id}`, { role: e.target.value }); } catch (err) { showError(err); }
      } }, ...['member', 'admin', 'owner'].map((r) => el('option', { value: r, text: r, selected: r === m.role })));
      parts.push(select);
    } else {
      parts.push(el('span', { class: 'hint', text: m.role }));
    }
    if (canManage && !isMe && c.kind === 'group' && m.role !== 'owner') {
      parts.push(el('button', { type: 'button', text: 'Remove', 'aria-label': `Remove ${name}`, onclick: async () => {
        try { await api('DELETE', `/api/v1/conversations/${c.id}/members/${m.user_id}`); } catch (err) { showError(err); }
      } }));
    }
    return el('li', {}, ...parts);
  }));
}

function sortedMessages(id) {
  return [...messageStore(id).byId.values()].sort((a, b) => a.seq - b.seq);
}

function renderMessages() {
  const id = state.current;
  const store = messageStore(id);
  const list = $('messages');
  const wanted = sortedMessages(id);
  const existing = new Map([...list.children].map((li) => [li.dataset.id, li]));
  // Items are updated in place so a playing voice message keeps its <audio> element.
  const nodes = wanted.map((m) => {
    const node = existing.get(m.id) || el('li', { 'data-id': m.id });
    fillMessage(node, m);
    return node;
  });
  for (const [mid, node] of existing) if (!store.byId.has(mid)) node.remove();
  nodes.forEach((node, i) => { if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null); });
  $('load-earlier').hidden = !store.hasMore;
  renderSeen();
}

function matrixLabel(matrix) {
  if (!matrix) return null;
  const text = matrix.state === 'failed' ? `Matrix: failed${matrix.error ? ` (${matrix.error})` : ''}` : `Matrix: ${matrix.state}`;
  return el('span', { class: `matrix ${matrix.state}`, text, title: matrix.event_id || '' });
}

function fillMessage(node, m) {
  const c = state.conversations.get(m.conversation_id);
  const mine = m.sender_id.toLowerCase() === state.me.id;
  const deleted = !!m.deleted_at;
  node.className = `message${mine ? ' mine' : ''}${deleted ? ' deleted' : ''}`;
  node.dataset.seq = m.seq;
  node.dataset.sender = m.sender_id.toLowerCase();
  const time = new Date(m.created_at);
  const meta = el('div', { class: 'meta' },
    el('span', { class: 'sender', text: displayName(m.sender_id, c) }),
    el('time', { datetime: m.created_at, text: time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) }),
    m.edited_at && !deleted ? el('span', { class: 'edited', text: '(edited)' }) : null,
    matrixLabel(m.matrix));
  let quote = null;
  if (m.reply_to) {
    const original = messageStore(m.conversation_id).byId.get(m.reply_to);
    const text = original ? `${displayName(original.sender_id, c)}: ${original.deleted_at ? 'message deleted' : original.content || original.media?.file_name || original.type}` : 'Reply to an earlier message';
    quote = el('div', { class: 'quote', text: `↪ ${text}` });
  }
  const body = el('div', { class: 'body', text: deleted ? 'Message deleted' : (m.content || '') });

  // The media element is made once per message and kept across updates.
  let media = node.querySelector(':scope > .media');
  if (deleted && media) { media.remove(); media = null; }
  if (!deleted && m.media && !media) media = makeMedia(m);

  const reactions = el('div', { class: 'reactions', role: 'group', 'aria-label': 'Reactions' },
    ...(m.reactions || []).map((r) => {
      const pressed = r.user_ids.some((u) => u.toLowerCase() === state.me.id);
      return el('button', { type: 'button', 'aria-pressed': String(pressed), 'aria-label': `${r.reaction} ${r.count}${pressed ? ', including you' : ''}`,
        text: `${r.reaction} ${r.count}`, onclick: () => toggleReaction(m, r.reaction, pressed) });
    }));
  const canDelete = mine || ['owner', 'admin'].includes(c?.my_role);
  const actions = deleted ? null : el('div', { class: 'actions' },
    el('button', { type: 'button', text: 'Reply', 'aria-label': 'Reply to this message', onclick: () => startReply(m) }),
    ...REACTIONS.map((r) => el('button', { type: 'button', text: r, 'aria-label': `React with ${r}`, onclick: () => toggleReaction(m, r, hasMyReaction(m, r)) })),
    mine && m.type === 'text' ? el('button', { type: 'button', text: 'Edit', 'aria-label': 'Edit this message', onclick: () => startEdit(m) }) : null,
    canDelete ? el('button', { type: 'button', text: 'Delete', 'aria-label': 'Delete this message', onclick: () => deleteMessage(m) }) : null);

  node.replaceChildren(...[meta, quote, media, body, reactions, actions].filter(Boolean));
}

function makeMedia(m) {
  const url = mediaUrl(m.media);
  const label = m.media.file_name || m.type;
  if (m.type === 'audio') {
    const audio = el('audio', { controls: true, preload: 'metadata', src: url, 'aria-label': `Voice message from ${displayName(m.sender_id, state.conversations.get(m.conversation_id))}` });
    // Recorded WebM has no duration in its header: seek past the end once so the player learns it and can seek.
    audio.addEventListener('loadedmetadata', () => {
      if (audio.duration === Infinity) {
        const restore = () => { audio.removeEventListener('durationchange', restore); audio.currentTime = 0; };
        audio.addEventListener('durationchange', restore);
        audio.currentTime = 1e7;
      }
    }, { once: true });
    const duration = m.media.duration_ms ? el('span', { class: 'hint', text: `${(m.media.duration_ms / 1000).toFixed(1)} s` }) : null;
    return el('div', { class: 'media' }, audio, duration);
  }
  if (m.type === 'image') {
    return el('div', { class: 'media' }, el('a', { href: url, target: '_blank', rel: 'noopener' }, el('img', { src: url, alt: label, loading: 'lazy' })));
  }
  const size = m.media.size_bytes >= 1024 * 1024 ? `${(m.media.size_bytes / 1048576).toFixed(1)} MB` : `${Math.ceil(m.media.size_bytes / 1024)} KB`;
  return el('div', { class: 'media' }, el('a', { href: url, download: m.media.file_name || '', text: `📎 ${label} (${size})` }));
}

function hasMyReaction(m, reaction) {
  return (m.reactions || []).some((r) => r.reaction === reaction && r.user_ids.some((u) => u.toLowerCase() === state.me.id));
}

function renderSeen() {
  // "Seen" under my latest message that another member's read marker has passed.
  const c = state.conversations.get(state.current);
  document.querySelectorAll('#messages .seen').forEach((n) => n.remove());
  if (!c?.members) return;
  const mine = sortedMessages(c.id).filter((m) => m.sender_id.toLowerCase() === state.me.id && !m.deleted_at);
  for (let i = mine.length - 1; i >= 0; i--) {
    const readers = c.members.filter((mb) => mb.user_id.toLowerCase() !== state.me.id && mb.last_read_seq >= mine[i].seq);
    if (readers.length) {
      const node = document.querySelector(`#messages li[data-id="${mine[i].id}"]`);
      node?.append(el('div', { class: 'seen', text: `Seen by ${readers.map((r) => displayName(r.user_id, c)).join(', ')}` }));
      return;
    }
  }
}

function scrollToBottom() {
  const scroller = $('messages-scroll');
  scroller.scrollTop = scroller.scrollHeight;
}

function nearBottom() {
  const s = $('messages-scroll');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function upsertMessage(m) {
  // Kept even before the conversation's first page has loaded: that page may have been read before this message.
  const store = messageStore(m.conversation_id);
  const existing = store.byId.get(m.id);
  // An older render (a send's HTTP answer after the edit's event) never replaces a newer one.
  if (existing && (existing.edited_at || '') > (m.edited_at || '') ) return;
  store.byId.set(m.id, { ...existing, ...m });
  if (m.conversation_id === state.current) {
    const stick = nearBottom();
    renderMessages();
    if (stick) scrollToBottom();
  }
}

let readTimer = null;
function markRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(async () => {
    const id = state.current;
    const c = state.conversations.get(id);
    if (!c || document.hidden || !state.socketOpen) return;
    const latest = sortedMessages(id).at(-1);
    if (!latest || latest.seq <= c.last_read_seq) return;
    try {
      await api('PUT', `/api/v1/conversations/${id}/read`, { seq: latest.seq });
      c.last_read_seq = Math.max(c.last_read_seq, latest.seq);
      c.unread_count = 0;
      renderConversationList();
    } catch (e) { showError(e); }
  }, 300);
}

// ---------- composing ----------

function showError(e) {
  $('composer-error').textContent = e?.message || String(e);
  setTimeout(() => { if ($('composer-error').textContent === (e?.message || String(e))) $('composer-error').textContent = ''; }, 6000);
}

function startReply(m) {
  state.editing = null;
  state.replyTo = m;
  renderReplyBanner();
  $('message-input').focus();
}

function startEdit(m) {
  state.replyTo = null;
  state.editing = m;
  $('message-input').value = m.content || '';
  renderReplyBanner();
  $('message-input').focus();
}

function renderReplyBanner() {
  const c = state.conversations.get(state.current);
  $('reply-banner').hidden = !state.replyTo;
  if (state.replyTo) $('reply-text').textContent = `Replying to ${displayName(state.replyTo.sender_id, c)}: ${state.replyTo.content || state.replyTo.type}`;
  $('edit-banner').hidden = !state.editing;
}

async function submitComposer(event) {
  event.preventDefault();
  const input = $('message-input');
  const text = input.value;
  if (!text.trim()) return;
  const id = state.current;
  try {
    if (state.editing) {
      const m = await api('PATCH', `/api/v1/conversations/${id}/messages/${state.editing.id}`, { content: text });
      upsertMessage(m);
      state.editing = null;
    } else {
      const body = { content: text, client_message_id: uuid() };
      if (state.replyTo) body.reply_to = state.replyTo.id;
      const m = await api('POST', `/api/v1/conversations/${id}/messages`, body);
      upsertMessage(m);
      state.replyTo = null;
      scrollToBottom();
    }
    input.value = '';
    renderReplyBanner();
  } catch (e) {
    showError(e);
  }
}

async function toggleReaction(m, reaction, mine) {
  try {
    await api(mine ? 'DELETE' : 'PUT', `/api/v1/conversations/${m.conversation_id}/messages/${m.id}/reactions/${encodeURIComponent(reaction)}`);
  } catch (e) { showError(e); }
}

async function deleteMessage(m) {
  if (!confirm('Delete this message for everyone?')) return;
  try {
    await api('DELETE', `/api/v1/conversations/${m.conversation_id}/messages/${m.id}`);
  } catch (e) { showError(e); }
}

function sendTyping() {
  const now = Date.now();
  if (now - state.lastTypingSent < 2500 || !state.socketOpen || !state.current) return;
  state.lastTypingSent = now;
  state.socket.send(JSON.stringify({ type: 'typing', conversation_id: state.current }));
}

async function upload(file, extra = {}, audioOnly = false) {
  const form = new FormData();
  form.append('file', file, file.name);
  form.append('client_message_id', uuid());
  for (const [k, v] of Object.entries(extra)) form.append(k, String(v));
  if (state.replyTo) form.append('reply_to', state.replyTo.id);
  const m = await api('POST', `/api/v1/conversations/${state.current}/${audioOnly ? 'messages/audio' : 'media'}`, form);
  state.replyTo = null;
  renderReplyBanner();
  upsertMessage(m);
  scrollToBottom();
}

async function toggleRecording() {
  const button = $('record');
  if (state.recorder) { state.recorder.stop(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    showError(new Error(`No microphone: ${e.message}`));
    return;
  }
  const type = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/mp4'].find((t) => MediaRecorder.isTypeSupported(t)) || '';
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
  const chunks = [];
  const started = performance.now();
  const tick = setInterval(() => { $('record-status').textContent = `Recording… ${((performance.now() - started) / 1000).toFixed(0)} s`; }, 500);
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = async () => {
    clearInterval(tick);
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    button.setAttribute('aria-pressed', 'false');
    button.textContent = '🎤 Record voice message';
    const duration = Math.round(performance.now() - started);
    const base = (recorder.mimeType || type || 'audio/webm').split(';')[0];
    const ext = { 'audio/webm': 'webm', 'audio/ogg': 'ogg', 'audio/mp4': 'm4a' }[base] || 'webm';
    $('record-status').textContent = 'Sending…';
    try {
      await upload(new File(chunks, `voice-message.${ext}`, { type: base }), { duration_ms: duration }, true);
      $('record-status').textContent = '';
    } catch (e) {
      $('record-status').textContent = '';
      showError(e);
    }
  };
  state.recorder = recorder;
  recorder.start(250);
  button.setAttribute('aria-pressed', 'true');
  button.textContent = '⏹ Stop and send';
  $('record-status').textContent = 'Recording…';
}

// ---------- live events ----------

function setConnection(text, offline) {
  const node = $('connection');
  node.textContent = text;
  node.classList.toggle('offline', !!offline);
}

function connect() {
  clearTimeout(state.reconnectTimer);
  if (!navigator.onLine) { setConnection('Offline', true); return; } // the 'online' event reconnects
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(`${scheme}://${location.host}/ws?access_token=${encodeURIComponent(state.token)}`);
  state.socket = socket;
  setConnection('Connecting…');
  socket.onmessage = (e) => { if (state.socket === socket) onFrame(JSON.parse(e.data)); };
  socket.onclose = () => {
    if (state.socket !== socket) return;
    state.socketOpen = false;
    setConnection('Reconnecting…', true);
    state.reconnectTimer = setTimeout(connect, state.reconnectDelay);
    state.reconnectDelay = Math.min(state.reconnectDelay * 2, 15000);
  };
}

// Browsers keep a WebSocket "open" across a network drop until TCP gives up, so follow the online state instead.
function dropConnection() {
  const socket = state.socket;
  state.socket = null;
  state.socketOpen = false;
  clearTimeout(state.reconnectTimer);
  if (socket) { socket.onclose = null; socket.close(); }
  setConnection('Offline', true);
}

async function onReady() {
  state.reconnectDelay = 500;
  // New conversations made while we were away are not in the resume; read the list for them.
  try { await loadConversations(); } catch (e) { showError(e); }
  const resume = Object.fromEntries(state.lastSeq);
  state.resuming = new Set(Object.keys(resume));
  if (state.resuming.size) state.socket?.send(JSON.stringify({ type: 'resume', conversations: resume }));
  state.socketOpen = true;
  setConnection('Live');
  markRead();
}

function onFrame(frame) {
  switch (frame.type) {
    case 'ready': onReady(); return;
    case 'resumed': state.resuming.delete(frame.conversation_id); return;
    case 'pong': return;
    case 'typing': onTyping(frame); return;
    case 'resync': state.resuming.delete(frame.conversation_id); resync(frame.conversation_id, frame.latest_seq); return;
    case 'error':
      if (frame.code === 'rate_limited' && frame.retry_after_ms != null) {
        // The user's reads budget refused the resume as a whole: ask again for what is still unanswered.
        setTimeout(() => {
          const ids = [...state.resuming];
          if (ids.length && state.socketOpen) {
            state.socket.send(JSON.stringify({ type: 'resume', conversations: Object.fromEntries(ids.map(id => [id, state.lastSeq.get(id)])) }));
          }
        }, frame.retry_after_ms);
        return;
      }
      // A refused resume (e.g. for a conversation this socket is not subscribed to yet) is answered too.
      if (frame.conversation_id) state.resuming.delete(frame.conversation_id);
      console.warn('server:', frame.code, frame.detail);
      return;
    default: if (frame.conversation_id && frame.seq) receive(frame);
  }
}

function receive(event) {
  const id = event.conversation_id;
  if (!state.lastSeq.has(id)) {
    // A conversation we have not read yet: hold its events until its state (and seq) is known.
    bufferEvent(id, event);
    if (!state.loading.has(id)) {
      state.loading.set(id, refreshConversation(id).catch(showError).finally(() => {
        state.loading.delete(id);
        drain(id);
        renderConversationList();
      }));
    }
    return;
  }
  const last = state.lastSeq.get(id);
  if (event.seq <= last) return; // already applied (a replay overlapping the live stream)
  bufferEvent(id, event);
  drain(id);
  if (state.pending.get(id)?.size && state.socketOpen && !state.resuming.has(id)) {
    // A gap: ask for what is missing (once: the answer to a resume already sent fills it too); anything replayed
    // twice is dropped above.
    state.resuming.add(id);
    state.socket.send(JSON.stringify({ type: 'resume', conversations: { [id]: state.lastSeq.get(id) } }));
  }
}

function bufferEvent(id, event) {
  if (!state.pending.has(id)) state.pending.set(id, new Map());
  state.pending.get(id).set(event.seq, event);
}

function drain(id) {
  const pending = state.pending.get(id);
  if (!pending || !state.lastSeq.has(id)) return;
  for (const seq of [...pending.keys()]) if (seq <= state.lastSeq.get(id)) pending.delete(seq);
  let next;
  while ((next = pending.get(state.lastSeq.get(id) + 1))) {
    pending.delete(next.seq);
    state.lastSeq.set(id, next.seq);
    apply(next);
  }
}

function apply(event) {
  const id = event.conversation_id;
  const c = state.conversations.get(id);
  if (!c) return;
  const d = event.data || {};
  c.last_seq = Math.max(c.last_seq || 0, event.seq);
  switch (event.type) {
    case 'message.new': {
      c.last_message = { id: d.id, sender_id: d.sender_id, type: d.type, preview: d.content, deleted: false, created_at: d.created_at };
      c.last_activity_at = d.created_at;
      const fromOther = d.sender_id.toLowerCase() !== state.me.id;
      if (fromOther && (state.current !== id || document.hidden)) c.unread_count = (c.unread_count || 0) + 1;
      upsertMessage(d);
      if (fromOther && state.current === id) markRead();
      break;
    }
    case 'message.edited':
      if (c.last_message?.id === d.id) c.last_message.preview = d.content;
      upsertMessage(d);
      break;
    case 'message.deleted': {
      if (c.last_message?.id === d.message_id) c.last_message.deleted = true;
      const m = state.messages.get(id)?.byId.get(d.message_id);
      if (m) upsertMessage({ ...m, content: null, media: null, deleted_at: event.created_at });
      break;
    }
    case 'reaction.added': case 'reaction.removed': {
      const m = state.messages.get(id)?.byId.get(d.message_id);
      if (m) upsertMessage({ ...m, reactions: changeReaction(m.reactions || [], d, event.type === 'reaction.added') });
      break;
    }
    case 'conversation.created':
      upsertConversation({ ...c, ...d });
      break;
    case 'conversation.updated':
      c.name = d.name;
      break;
    case 'member.added':
      c.members = [...(c.members || []).filter((m) => m.user_id !== d.member.user_id), d.member];
      c.member_count = c.members.length;
      break;
    case 'member.removed':
      if (d.user_id.toLowerCase() === state.me.id) { forgetConversation(id); return; }
      c.members = (c.members || []).filter((m) => m.user_id.toLowerCase() !== d.user_id.toLowerCase());
      c.member_count = c.members.length;
      break;
    case 'member.updated':
      c.members = (c.members || []).map((m) => (m.user_id.toLowerCase() === d.user_id.toLowerCase() ? { ...m, role: d.role } : m));
      if (d.user_id.toLowerCase() === state.me.id) c.my_role = d.role;
      break;
    case 'read.updated':
      c.members = (c.members || []).map((m) => (m.user_id.toLowerCase() === d.user_id.toLowerCase() ? { ...m, last_read_seq: Math.max(m.last_read_seq, d.last_read_seq) } : m));
      if (d.user_id.toLowerCase() === state.me.id) {
        c.last_read_seq = Math.max(c.last_read_seq || 0, d.last_read_seq);
        if (!c.last_message || d.last_read_seq >= (state.messages.get(id)?.byId.get(c.last_message.id)?.seq ?? c.last_seq)) c.unread_count = 0;
      }
      break;
    default:
      break;
  }
  renderConversationList();
  if (state.current === id && !event.type.startsWith('message.') && !event.type.startsWith('reaction.')) renderCurrent();
  else if (state.current === id && event.type === 'read.updated') renderSeen();
}

function changeReaction(reactions, d, added) {
  const list = reactions.map((r) => ({ ...r, user_ids: [...r.user_ids] }));
  let entry = list.find((r) => r.reaction === d.reaction);
  const uid = d.user_id.toLowerCase();
  if (added) {
    if (!entry) { entry = { reaction: d.reaction, count: 0, user_ids: [] }; list.push(entry); }
    if (!entry.user_ids.some((u) => u.toLowerCase() === uid)) entry.user_ids.push(d.user_id);
  } else if (entry) {
    entry.user_ids = entry.user_ids.filter((u) => u.toLowerCase() !== uid);
  }
  return list.map((r) => ({ ...r, count: r.user_ids.length })).filter((r) => r.count > 0);
}

async function resync(id, latestSeq) {
  // Too much was missed to replay: read the conversation and its latest page again.
  state.lastSeq.set(id, latestSeq);
  state.pending.delete(id);
  state.messages.delete(id);
  await refreshConversation(id);
  if (state.current === id) { await loadLatest(id); renderCurrent(); scrollToBottom(); }
  renderConversationList();
}

function onTyping(frame) {
  if (frame.user_id.toLowerCase() === state.me.id) return;
  state.typingUntil.set(`${frame.conversation_id}|${frame.user_id.toLowerCase()}`, Date.now() + 4000);
  renderTyping();
  setTimeout(renderTyping, 4100);
}

function renderTyping() {
  const now = Date.now();
  const c = state.conversations.get(state.current);
  const who = [];
  for (const [key, until] of state.typingUntil) {
    const [cid, uid] = key.split('|');
    if (until < now) { state.typingUntil.delete(key); continue; }
    if (cid === state.current) who.push(displayName(uid, c));
  }
  $('typing').textContent = who.length ? `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…` : '';
}

// ---------- start-up ----------

async function start() {
  $('signin').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = state.me.name ? `${state.me.name} (${state.me.id.slice(0, 8)})` : state.me.id;
  $('me-name').title = state.me.id;
  try {
    await loadConversations();
  } catch (e) {
    if (e.status !== 401) showError(e);
    return;
  }
  renderCurrent();
  connect();
}

function wire() {
  $('dev-signin').addEventListener('submit', async (e) => {
    e.preventDefault();
    try { await devSignIn($('dev-user-id').value.trim(), $('dev-name').value.trim()); } catch (err) { $('signin-error').textContent = err.message; }
  });
  document.querySelectorAll('.presets button').forEach((b) => b.addEventListener('click', () => {
    $('dev-user-id').value = b.dataset.user;
    $('dev-name').value = b.dataset.name;
  }));
  $('dev-new-id').addEventListener('click', () => { $('dev-user-id').value = uuid(); });
  $('token-signin').addEventListener('submit', async (e) => {
    e.preventDefault();
    try { useToken($('token-input').value.trim()); await start(); } catch (err) { $('signin-error').textContent = err.message; }
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('back').addEventListener('click', () => { $('app').classList.remove('in-conversation'); state.current = null; renderConversationList(); });
  $('create-form').addEventListener('submit', createConversation);
  $('composer').addEventListener('submit', submitComposer);
  $('message-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); $('composer').requestSubmit(); }
    if (e.key === 'Escape') { state.replyTo = null; state.editing = null; renderReplyBanner(); }
  });
  $('message-input').addEventListener('input', sendTyping);
  $('reply-cancel').addEventListener('click', () => { state.replyTo = null; renderReplyBanner(); });
  $('edit-cancel').addEventListener('click', () => { state.editing = null; $('message-input').value = ''; renderReplyBanner(); });
  $('load-earlier').addEventListener('click', () => loadEarlier().catch(showError));
  $('messages-scroll').addEventListener('scroll', () => {
    const store = state.messages.get(state.current);
    if ($('messages-scroll').scrollTop === 0 && store?.hasMore && !store.pagingUp) {
      store.pagingUp = true;
      loadEarlier().catch(showError).finally(() => { store.pagingUp = false; });
    }
  });
  $('record').addEventListener('click', toggleRecording);
  $('file-input').addEventListener('change', async (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (file) { try { await upload(file); } catch (err) { showError(err); } }
  });
  $('add-member-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('POST', `/api/v1/conversations/${state.current}/members`, { user_id: $('add-member-id').value.trim(), role: $('add-member-role').value });
      $('add-member-id').value = '';
    } catch (err) { showError(err); }
  });
  $('leave').addEventListener('click', async () => {
    if (!confirm('Leave this conversation?')) return;
    try { await api('POST', `/api/v1/conversations/${state.current}/leave`); } catch (err) { showError(err); }
  });
  window.addEventListener('offline', dropConnection);
  window.addEventListener('online', () => { if (state.token && !state.socket) connect(); });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) markRead(); });
}

async function main() {
  wire();
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get('access_token');
  if (fromUrl) {
    // Out of the address bar and history, where it would otherwise stay.
    history.replaceState(null, '', location.pathname + location.search);
    try { useToken(fromUrl); } catch (e) { await showSignIn(e.message); return; }
  } else {
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) { try { useToken(saved); } catch { sessionStorage.removeItem(TOKEN_KEY); } }
  }
  if (state.token) await start(); else await showSignIn();
}

main();

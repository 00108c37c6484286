// Huizhen web client: the chat panel (a drawer on phones, a side panel on desktops).
//
// Messages come from the session ('chat' events, ours included: the server echoes them);
// each shows the sender's name (and role), the local time and the text (as text, never HTML).
// While the panel is closed, messages from others count as unread (badge on #btn-chat).

import { getLang, roleLabel, t } from './i18n.js';

export function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const locale = getLang() === 'zh' ? 'zh-CN' : 'en-GB';
  return d.toLocaleTimeString(locale, { hour: '2-digit', minute: '2-digit' });
}

export class ChatView {
  /**
   * @param {{panel: HTMLElement, log: HTMLElement, input: HTMLInputElement, send: HTMLElement,
   *          form: HTMLFormElement, toggle: HTMLElement, badge: HTMLElement,
   *          close: HTMLElement, empty: HTMLElement,
   *          onSend: (text: string) => boolean, lookup: (pid: string) => object|null,
   *          onToggle?: (open: boolean) => void, announce?: (text: string) => void}} options
   */
  constructor(options) {
    Object.assign(this, options);
    this.open = false;
    this.unread = 0;
    this.messages = [];
    this.toggle.addEventListener('click', () => this.setOpen(!this.open));
    this.close.addEventListener('click', () => this.setOpen(false));
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape') this.setOpen(false);
    });
    this.render();
  }

  setOpen(open) {
    this.open = !!open;
    this.panel.hidden = !this.open;
    this.toggle.setAttribute('aria-expanded', String(this.open));
    document.body.dataset.chat = this.open ? 'open' : 'closed';
    if (this.open) {
      this.unread = 0;
      this.renderBadge();
      this.scrollToEnd();
      // phones: do not pop the keyboard up over the messages at once
      if (!matchMedia('(pointer: coarse)').matches) this.input.focus();
    } else if (document.activeElement === this.input || this.panel.contains(document.activeElement)) {
      this.toggle.focus();
    }
    if (this.onToggle) this.onToggle(this.open);
  }

  submit() {
    const text = this.input.value.trim();
    if (!text) return;
    if (this.onSend(text)) {
      this.input.value = '';
    }
  }

  /** Replace everything (after a reconnect the session keeps its list). */
  setMessages(list) {
    this.messages = [...list];
    this.log.textContent = '';
    for (const m of this.messages) this.log.append(this.item(m));
    this.render();
    this.scrollToEnd();
  }

  add(message) {
    this.messages.push(message);
    const li = this.item(message);
    // keep the server's order (ids) when an older one arrives late
    const later = [...this.log.children].find(
      (el) => message.id !== null && Number(el.dataset.id) > message.id,
    );
    if (later) this.log.insertBefore(li, later);
    else this.log.append(li);
    if (!message.mine && !this.open) {
      this.unread++;
      if (this.announce) this.announce(t('chat_announce', { name: message.name }));
    }
    this.render();
    this.scrollToEnd();
  }

  item(m) {
    const li = document.createElement('li');
    li.className = 'chat-msg';
    li.dataset.id = m.id === null ? '' : String(m.id);
    li.dataset.mine = String(!!m.mine);
    if (m.participant_id) li.dataset.senderId = m.participant_id;
    const meta = document.createElement('div');
    meta.className = 'chat-meta';
    const name = document.createElement('span');
    name.className = 'chat-name';
    name.textContent = m.mine ? t('you') : m.name || '…';
    meta.append(name);
    const who = this.lookup(m.participant_id);
    if (who && who.role && !m.mine) {
      const role = document.createElement('span');
      role.className = 'chat-role';
      role.textContent = roleLabel(who.role);
      meta.append(role);
    }
    const time = document.createElement('time');
    time.className = 'chat-time';
    time.dateTime = m.at;
    time.textContent = formatTime(m.at);
    meta.append(time);
    const text = document.createElement('p');
    text.className = 'chat-text';
    text.textContent = m.text;
    li.append(meta, text);
    return li;
  }

  scrollToEnd() {
    this.log.scrollTop = this.log.scrollHeight;
  }

  renderBadge() {
    this.badge.hidden = this.unread === 0;
    this.badge.textContent = this.unread > 99 ? '99+' : String(this.unread);
    this.toggle.dataset.unread = String(this.unread);
    this.toggle.setAttribute(
      'aria-label',
      this.unread ? t('chat_label_unread', { n: this.unread }) : t('chat_label'),
    );
  }

  render() {
    this.empty.hidden = this.messages.length > 0;
    this.renderBadge();
  }

  /** After a language change: names ("You"), roles and times. */
  rerender() {
    this.setMessages(this.messages);
  }
}

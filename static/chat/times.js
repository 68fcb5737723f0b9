// chatsite page script, message times: each message's <time datetime> (the server writes
// it in UTC) shown in the reader's own time zone and locale. The label is short (the time
// of day, with the date when it is not today); its title gives the full date and time. CSS
// shows it with the message's actions: on hover or focus on a desktop, always on a phone.

const timeOfDay = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayAndTime = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "numeric",
  minute: "2-digit",
});
const fullDate = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "numeric",
  minute: "2-digit",
});
const full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

function label(date) {
  const now = new Date();
  if (date.toDateString() === now.toDateString()) return timeOfDay.format(date);
  if (date.getFullYear() === now.getFullYear()) return dayAndTime.format(date);
  return fullDate.format(date);
}

// Show `iso` (or the element's own datetime) in `time`; an unknown time shows nothing.
export function showTime(time, iso = time.getAttribute("datetime")) {
  const date = iso ? new Date(iso) : null;
  if (!date || Number.isNaN(date.getTime())) return;
  time.setAttribute("datetime", iso);
  time.textContent = label(date);
  time.title = full.format(date);
}

export function setTime(bubble, iso) {
  const time = bubble.querySelector('[data-testid="message-time"]');
  if (time) showTime(time, iso);
}

// The server-rendered messages' times, once the page starts.
export function showTimes(scope = document) {
  for (const time of scope.querySelectorAll('[data-testid="message-time"][datetime]')) {
    showTime(time);
  }
}

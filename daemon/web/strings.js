// Every text the app shows, per language, in one place: translating the app means adding one
// object here. Placeholders are {name}.

const en = {
  title: "Venue",
  signInHeading: "Sign in",
  signInHelp: "Use the ticket code from your confirmation or badge, and your last name or email.",
  ticketCode: "Ticket code",
  nameOrEmail: "Last name or email",
  signIn: "Sign in",
  signingIn: "Signing in…",
  signOut: "Sign out",
  wrongPair: "That ticket code and name or email do not match a registration. Check both and try again.",
  tooManyAttempts: "Too many attempts. Try again in {secs} s.",
  unreachable: "The venue's network is not answering. Check that you are on the venue WiFi.",
  announcements: "Announcements",
  noAnnouncements: "No announcements yet.",
  linkLive: "Live",
  linkConnecting: "Connecting…",
  linkOffline: "Offline: showing what arrived before. Reconnecting…",
  sessionEnded: "You were signed out. Please sign in again.",
  views: "Views",
  tab_announcements: "News",
  tab_schedule: "Agenda",
  tab_people: "People",
  tab_chat: "Chat",
  tab_me: "You",
  schedule: "Schedule",
  noSchedule: "No sessions are scheduled yet.",
  now: "Now",
  next: "Next",
  nothingNow: "Nothing on now",
  nothingNext: "Nothing later today",
  fullSchedule: "All sessions in {room}",
  occupancy: "{count} of {capacity} seats taken",
  occupancyNoCapacity: "{count} people here",
  full: "Full",
  elsewhere: "Elsewhere",
  scheduleUnavailable: "The schedule could not be loaded. It will be tried again.",
  me: "You",
  checkedIn: "Checked in at {time}.",
  notCheckedIn: "Not checked in yet: show your ticket code at the registration desk.",
  privacyLegend: "Who can see where you are",
  privacyHelp: "This applies to people who follow you, and changes for them at once.",
  privacy_precise: "Your room, as precisely as the venue can tell",
  privacy_zone: "The room you are in",
  privacy_venue: "Only whether you are at the venue",
  privacy_hidden: "Nobody: not your status, not your location",
  saved: "Saved.",
  notSaved: "Not saved: the venue's network did not answer. Try again.",
  forget: "Delete my location history",
  forgetConfirm: "Delete every room visit recorded for you, on every device of this venue?",
  forgotten: "Your location history was deleted.",
  chat: "Chat",
  chatAbout: "Chat about {title}",
  chatHelp: "Open a session's chat from the schedule.",
  messages: "Messages",
  message: "Message",
  send: "Send",
  you: "You",
  sending: "Sending…",
  waitingForNetwork: "Waiting for the network; it will be sent once the venue's network answers.",
  notSent: "A message could not be sent (the appliance refused it).",
  people: "People",
  findPeople: "Find people by name",
  find: "Find",
  searchResults: "People found",
  nobodyFound: "Nobody by that name (or they do not share their presence).",
  searchFailed: "The search did not work; check the venue WiFi and try again.",
  following: "People you follow",
  noFollowing: "You follow nobody yet.",
  follow: "Follow",
  followName: "Follow {name}",
  unfollow: "Stop following",
  unfollowName: "Stop following {name}",
  status_online: "online",
  status_away: "away",
  status_dnd: "do not disturb",
  status_offline: "offline",
  status_unknown: "not known yet",
  notSharing: "Not sharing where they are",
  inZone: "in {zone}",
  atVenue: "at the venue",
  leftVenue: "has left the venue",
};

const languages = { en };

/** The strings of the browser's first language we have, English otherwise. */
export function strings() {
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const table = languages[tag.toLowerCase().split("-")[0]];
    if (table) return table;
  }
  return en;
}

/** `text` with each {name} replaced by `values[name]`. */
export function fill(text, values) {
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

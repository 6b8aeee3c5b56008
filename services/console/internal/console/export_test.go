package console

// LiveSince is liveSince.
var LiveSince = liveSince

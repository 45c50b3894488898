package main

// platformCommands are the commands only some platforms have: the daemon
// is Linux's for now.
func platformCommands() []*command { return nil }

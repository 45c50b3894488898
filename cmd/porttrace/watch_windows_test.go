package main

// platformBadInputs are the flags Windows refuses.
var platformBadInputs = []badInput{
	{[]string{"--container", "0123456789ab"}, 2, "--container is Linux's: Windows' events do not say which container a process runs in"},
}

//go:build linux

package main

import (
	"testing"
	"time"

	pt "github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/history"
)

func TestDescribeHolders(t *testing.T) {
	start := time.Unix(100, 0)
	at := func(d time.Duration) int64 { return start.Add(d).UnixNano() }
	got := describeHolders([]history.Holder{
		{Owner: history.Process{PID: 7}, Via: pt.OwnerBind, FromNs: at(-2 * time.Millisecond), ListenNs: at(-time.Millisecond), UntilNs: at(-500 * time.Microsecond), End: history.EndClosed},
		{Owner: history.Process{PID: 8}, Via: pt.OwnerSnapshot, FromNs: at(time.Second)},
	}, start)
	want := `pid 7 via bind from -2ms listen -1ms until -500µs end "closed"; pid 8 via snapshot from 1s listen - until - end ""`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := describeHolders(nil, start); got != "no holder" {
		t.Errorf("no holders: got %q", got)
	}
}

package render

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/history"
)

// TestHistoryGolden: a port's history in text and JSON, every section; the
// second answer comes from a daemon whose writer dropped changes, which the
// text says before anything else.
func TestHistoryGolden(t *testing.T) {
	at := func(s string) int64 {
		ts, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return ts.UnixNano()
	}
	sock := history.Socket{Proto: tracer.ProtoTCP, NetNS: 4026531840, Addr: netip.MustParseAddr("0.0.0.0"), Port: 8080}
	nginx := history.Process{PID: 880, Comm: "nginx", User: "root", Exe: "/usr/sbin/nginx", Cmdline: "nginx: master process /usr/sbin/nginx"}
	worker := history.Process{PID: 881, Comm: "nginx", User: "www-data"}
	full := history.Result{
		Port: 8080, SinceNs: at("2026-12-01T08:00:00Z"), UntilNs: at("2026-12-01T09:00:00Z"),
		Holders: []history.Holder{
			{Socket: sock, Owner: history.Process{PID: 4242, Comm: "python3", Cmdline: "python3 -m http.server 8080"}, Via: tracer.OwnerBind,
				FromNs: at("2026-12-01T08:05:00Z"), ListenNs: at("2026-12-01T08:05:00Z"), UntilNs: at("2026-12-01T08:20:00Z"), End: history.EndClosed},
			{Socket: sock, Owner: nginx, Via: tracer.OwnerBind, FromNs: at("2026-12-01T08:30:00Z"), ListenNs: at("2026-12-01T08:30:01Z"),
				UntilNs: at("2026-12-01T08:30:02Z"), End: history.EndHandedOver},
			{Socket: sock, Owner: worker, Via: tracer.OwnerHolder, FromNs: at("2026-12-01T08:30:02Z"), ListenNs: at("2026-12-01T08:30:01Z")},
		},
		FailedBinds:  []history.FailedBind{{TimeNs: at("2026-12-01T08:10:00Z"), Socket: sock, Errno: 98, By: nginx}},
		OwnerChanges: []history.OwnerChange{{TimeNs: at("2026-12-01T08:30:02Z"), Socket: sock, From: nginx, To: worker, Via: tracer.OwnerHolder}},
		Connections: []history.Connections{{MinuteNs: at("2026-12-01T08:31:00Z"), Inbound: history.ConnCounts{Opened: 120, Closed: 118}},
			{MinuteNs: at("2026-12-01T08:32:00Z"), Outbound: history.ConnCounts{Opened: 3, Closed: 3}}},
	}
	empty := history.Result{Port: 9090, SinceNs: full.SinceNs, UntilNs: full.UntilNs, Dropped: 4096}
	var text, js bytes.Buffer
	for _, r := range []*history.Result{&full, &empty} {
		HistoryText(&text, r, time.UTC)
		text.WriteString("\n")
		if err := HistoryJSON(&js, r); err != nil {
			t.Fatal(err)
		}
	}
	golden(t, "history.txt", text.Bytes())
	golden(t, "history.json", js.Bytes())
}

package render

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/porttrace/porttrace/tracer"
	"github.com/porttrace/porttrace/tracer/proc"
	"github.com/porttrace/porttrace/tracer/snapshot"
	"github.com/porttrace/porttrace/tracer/why"
)

// sampleVerdicts covers every shape of why's answer: free, free beside a
// SO_REUSEPORT group, blocked by a listener (with user), by a bound socket,
// by many TIME_WAIT sockets, by one seen owner's TIME_WAIT, by a server's
// connections (one blocker per process and state), and a refusal nothing
// explains.
func sampleVerdicts() []why.Verdict {
	nginx := &proc.Process{Identity: proc.Identity{PID: 1234}, Name: "nginx", User: "www-data"}
	listener := portSocket(tracer.ProtoTCP, tracer.StateListen, "0.0.0.0:8080", "", 1234)
	bound := portSocket(tracer.ProtoTCP, tracer.StateClose, "127.0.0.1:8080", "", 1234)
	held := &snapshot.PortReport{Port: 8080, Sockets: []snapshot.PortSocket{listener, bound}, Processes: procs(nginx)}
	var tws []snapshot.PortSocket
	for i := range 5 {
		tws = append(tws, timeWait("127.0.0.1:8080", fmt.Sprintf("127.0.0.1:%d", 41000+i), int64(50+i)*1e9, nil))
	}
	tws = append(tws, timeWait("127.0.0.1:8080", "127.0.0.1:42000", 12e9, &proc.Process{Identity: proc.Identity{PID: 99}, Name: "java"}))
	serving := []snapshot.PortSocket{listener}
	for i := range 4 {
		serving = append(serving, portSocket(tracer.ProtoTCP, tracer.StateEstablished, "127.0.0.1:8080", fmt.Sprintf("127.0.0.1:%d", 43000+i), 1234))
	}
	serving = append(serving, portSocket(tracer.ProtoTCP, tracer.StateCloseWait, "127.0.0.1:8080", "127.0.0.1:44000", 1234))
	sys := why.System{UnprivilegedPortStart: 1024, EphemeralLow: 32768, EphemeralHigh: 60999}
	lo := netip.MustParseAddr("127.0.0.1")
	return []why.Verdict{
		why.Judge(why.Request{Port: 8080, Addr: netip.MustParseAddr("127.11.22.33")}, held, sys, ""),
		why.Judge(why.Request{Port: 8080, ReusePort: true}, held, sys, ""),
		why.Judge(why.Request{Port: 8080}, held, sys, "EADDRINUSE"),
		why.Judge(why.Request{Port: 8080, Addr: lo}, &snapshot.PortReport{Port: 8080, Sockets: tws}, sys, "EADDRINUSE"),
		why.Judge(why.Request{Port: 8080, Addr: lo}, &snapshot.PortReport{Port: 8080, Sockets: tws[5:]}, sys, "EADDRINUSE"),
		why.Judge(why.Request{Port: 8080, Addr: lo}, &snapshot.PortReport{Port: 8080, Sockets: serving, Processes: procs(nginx)}, sys, "EADDRINUSE"),
		why.Judge(why.Request{Port: 40000, UDP: true}, &snapshot.PortReport{Port: 40000}, sys, "EADDRINUSE"),
		why.Judge(why.Request{Port: 80, Addr: netip.MustParseAddr("192.0.2.1")}, &snapshot.PortReport{Port: 80}, sys, "EADDRNOTAVAIL"),
	}
}

func TestWhyTextGolden(t *testing.T) {
	var b bytes.Buffer
	for _, v := range sampleVerdicts() {
		fmt.Fprintf(&b, "=== %s:%d\n", v.Request.Address(), v.Request.Port)
		WhyText(&b, &v)
	}
	golden(t, "why.txt", b.Bytes())
}

func TestWhyJSONGolden(t *testing.T) {
	var b bytes.Buffer
	for _, v := range sampleVerdicts() {
		if err := WhyJSON(&b, &v); err != nil {
			t.Fatal(err)
		}
	}
	golden(t, "why.json", b.Bytes())
}

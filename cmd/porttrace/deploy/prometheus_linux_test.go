package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestPrometheusScrapes has a real Prometheus server (Debian's prometheus
// package) scrape the daemon every second, and asks it, through its HTTP
// API, for the listeners the daemon counts on a port the test listens on
// and then stops listening on: 1, then 0. The exposition the server
// scraped is checked by promtool too.
func TestPrometheusScrapes(t *testing.T) {
	needRoot(t)
	prometheus := need(t, "prometheus", "prometheus")
	promtool := need(t, "promtool", "prometheus")
	dir := t.TempDir()

	// Listening before the daemon starts, and scraped as soon as it
	// serves: the port gets one of the daemon's port labels (the first
	// 256 ports seen listening, on a machine where tests churn through
	// listeners) from its starting snapshot.
	l, port := listenTCP(t)
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	log, socket := filepath.Join(dir, "daemon.log"), filepath.Join(dir, "porttrace.sock")
	d := startDaemon(t, log, socket, porttraceBinary(t), "daemon", "--socket", socket, "--data-dir", "", "--metrics-address", metrics, "--log-file", log)
	if d.hasExited() {
		t.Fatalf("the daemon exited:\n%s", d.logText())
	}
	scrape(t, metrics)

	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `global:
  scrape_interval: 1s
scrape_configs:
  - job_name: porttrace
    static_configs:
      - targets: [%q]
`, metrics), 0o644); err != nil {
		t.Fatal(err)
	}
	web := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	server := exec.Command(prometheus, "--config.file", config, "--storage.tsdb.path", filepath.Join(dir, "tsdb"), "--web.listen-address", web)
	serverLog := filepath.Join(dir, "prometheus.log")
	outputTo(t, server, serverLog)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		server.Process.Kill()
		server.Wait()
	})
	waitFor(t, "prometheus to be ready", 30*time.Second, func() bool {
		r, err := http.Get("http://" + web + "/-/ready")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == http.StatusOK
	})

	query := fmt.Sprintf(`porttrace_tcp_sockets{job="porttrace",state="listen",port="%d"}`, port)
	waitForValue := func(want string) {
		t.Helper()
		var got string
		for deadline := time.Now().Add(30 * time.Second); got != want; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				out, _ := os.ReadFile(serverLog)
				t.Fatalf("prometheus answers %s = %q, want %q; its log:\n%s", query, got, want, out)
			}
			got = queryValue(t, web, query)
		}
	}
	waitForValue("1")
	l.Close()
	waitForValue("0")

	// What the server scraped, checked as Prometheus's linter does.
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = bytes.NewReader(scrape(t, metrics))
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// scrape gets the daemon's metrics.
func scrape(t *testing.T, address string) []byte {
	t.Helper()
	r, err := http.Get("http://" + address + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %v %s", address, err, r.Status)
	}
	return b
}

// queryValue asks a Prometheus server's HTTP API for an instant query's
// one value: "" while there is none.
func queryValue(t *testing.T, server, query string) string {
	t.Helper()
	r, err := http.Get("http://" + server + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var answer struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"` // [time, "value"]
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&answer); err != nil {
		t.Fatal(err)
	}
	if answer.Status != "success" {
		t.Fatalf("query %s: %s %s", query, answer.Status, answer.Error)
	}
	switch len(answer.Data.Result) {
	case 0:
		return ""
	case 1:
		v, _ := answer.Data.Result[0].Value[1].(string)
		return v
	}
	t.Fatalf("query %s: %d series, want one", query, len(answer.Data.Result))
	return ""
}

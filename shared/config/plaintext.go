package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
)

// Credentials in clear (issue 18 item 7): a Cassandra username without tls sends its password in
// clear; an http:// S3 endpoint sends every blob, the access key ID and replayable signed
// requests in clear (NATS: bus.InClear).
//
// Decision: warn, not refuse. Each such setting is reported once per process at start, one line
// (slog Warn) naming the setting, what crosses the network and the two ways out: encrypt, or
// declare it deliberate with allow_plaintext: true on the target or the destination. A loopback
// host is never reported. Refusing would be safer on day one, but over a 40-day migration ferry's
// processes restart many times (rollouts, node drains, scaling); a refusal that came with an
// upgrade, or a host added to a target, would turn each restart into a crash loop and stop the
// migration over a risk that existed from its first day and that the network may already cover
// in a way ferry cannot see (a service mesh's mTLS, WireGuard, IPsec). The warning repeats at
// every start of every process, so it is seen; allow_plaintext is refused where nothing is in
// clear, so that a stale declaration cannot silence a later change.

// Plaintext reports, in one line, that this target sends its username's password in clear to a
// host that is not loopback and the job file does not say it is deliberate; "" otherwise.
func (t Target) Plaintext() string {
	if t.Username == "" || t.TLS != nil || t.AllowPlaintext {
		return ""
	}
	for _, h := range t.Hosts {
		if !Loopback(h) {
			return fmt.Sprintf("cassandra target %s: username %q without tls: its password crosses the network in clear to %s; set tls (client_encryption_options on the nodes), or allow_plaintext: true on the target if that is deliberate", t.Name, t.Username, h)
		}
	}
	return ""
}

// Plaintext reports, in one line, that the destination is an http:// endpoint on a host that is
// not loopback and the job file does not say it is deliberate; "" otherwise.
func (d Destination) Plaintext() string {
	if d.AllowPlaintext || !strings.HasPrefix(d.Endpoint, "http://") {
		return ""
	}
	u, err := url.Parse(d.Endpoint)
	if err != nil || Loopback(u.Host) {
		return ""
	}
	return fmt.Sprintf("destination.endpoint %s is plain http: every blob, the access key ID and signed requests (replayable for minutes) cross the network in clear; use https://, or destination.allow_plaintext: true if that is deliberate", d.Endpoint)
}

// Loopback reports whether host (a name or address, with or without a port) is a loopback
// address or localhost.
func Loopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

var warned sync.Map // report → struct{}

// WarnPlaintext logs a Plaintext report (slog.Warn) the first time this process sees it. The
// clients call it where they are made (cass.ClusterConfig, blobstore.New, and the NATS
// connection), so each process warns about what it uses.
func WarnPlaintext(report string) {
	if _, seen := warned.LoadOrStore(report, struct{}{}); !seen {
		slog.Warn("in clear: " + report)
	}
}

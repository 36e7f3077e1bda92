package k8s

import (
	"os"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestNATSSync: the NATS cluster fsyncs before it confirms a write (jetstream sync_interval:
// always, merged into the chart's jetstream block), like the local stack and `ferry run`.
func TestNATSSync(t *testing.T) {
	b, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Config struct {
			JetStream struct {
				Merge map[string]any `json:"merge"`
			} `json:"jetstream"`
		} `json:"config"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if got := v.Config.JetStream.Merge["sync_interval"]; got != "always" {
		t.Errorf("config.jetstream.merge.sync_interval = %v, want always", got)
	}
}

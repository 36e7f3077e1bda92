package config

import (
	"os"
	"strings"
	"testing"
)

func TestLocalJobFileIsValid(t *testing.T) {
	j, err := Load("../../deploy/local/ferry.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Source.Targets) != 2 || j.Source.Targets[1].LocalDC != "dc2" {
		t.Fatalf("targets = %+v", j.Source.Targets)
	}
	if got := j.Source.Targets[0].CQL(); got != "SELECT data FROM ferry_demo.blobs WHERE key = ?" {
		t.Errorf("CQL() = %q", got)
	}
}

func TestValidateErrors(t *testing.T) {
	base := `
source:
  targets:
    - {hosts: [127.0.0.1], table: ks.t}
destination: {bucket: my-bucket}
`
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"valid", base, ""},
		{"no targets", "destination: {bucket: b12}\n", "at least one read target"},
		{"bad table", strings.Replace(base, "ks.t", "kst", 1), "want keyspace.table"},
		{"query without ?", strings.Replace(base, "table: ks.t", "query: SELECT data FROM ks.t", 1), "exactly one '?'"},
		{"bad consistency", strings.Replace(base, "table: ks.t", "table: ks.t, consistency: MOST", 1), "unknown level"},
		{"bad bucket", strings.Replace(base, "my-bucket", "My_Bucket", 1), "not a valid S3 bucket name"},
		{"unknown field", base + "typo: 1\n", "field typo not found"},
		{"bad rewrite", base + "keys: {rewrite: [{match: '(', replace: x}]}\n", "rewrite[0].match"},
		{"template without key", base + "keys: {template: 'x/{hash2}'}\n", "must contain {key}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "test.yaml")
			if tt.wantErr == "" {
				if err != nil && tt.name == "valid" {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateJobName(t *testing.T) {
	for name, ok := range map[string]bool{"demo": true, "a_b-1": true, "": false, "a.b": false, "a b": false, "x*": false} {
		if err := ValidateJobName(name); (err == nil) != ok {
			t.Errorf("ValidateJobName(%q) = %v", name, err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(os.DevNull + "/nope.yaml")
	if err == nil || !strings.Contains(err.Error(), "read config") {
		t.Fatalf("Load = %v", err)
	}
}

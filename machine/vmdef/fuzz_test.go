package vmdef

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParse checks that any file is either refused with a position
// inside it or parsed into a definition that survives a round trip.
func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(`{"name":"a","kernel":"k","disks":[{"path":"d","serial":"s"}],"balloon":{}}`))
	f.Add([]byte("{\"name\": \"a\",\n \"kernel\": /k}"))
	f.Add([]byte(`{"name": "a", "kernel": "/k", "cpus": 1e3}`))
	f.Add([]byte(`{"name": "a", "kernel": "/k", "user": "1000:1000", "limits": {"cpus": 0.5, "memory": "400M"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse("f.json", data, "/base")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%T %v is not an *Error", err, err)
			}
			if e.Line > bytes.Count(data, []byte("\n"))+1 || (e.Line > 0 && e.Column < 1) {
				t.Fatalf("%v: position outside the file", err)
			}
			return
		}
		out, err := d.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse("out.json", out, "/elsewhere")
		if err != nil {
			t.Fatalf("the marshalled definition is refused: %v\n%s", err, out)
		}
		if again.Name != d.Name || again.Config.Kernel != d.Config.Kernel || len(again.Config.Disks) != len(d.Config.Disks) ||
			again.Config.Memory != d.Config.Memory || again.Config.CPUs != d.Config.CPUs ||
			again.User != d.User || again.Limits != d.Limits {
			t.Fatalf("round trip changed the definition:\n%s", out)
		}
	})
}

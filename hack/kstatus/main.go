// Command kstatus prints the kstatus verdict (sigs.k8s.io/cli-utils/pkg/kstatus/status) of
// Kubernetes objects read as JSON on stdin: one object, or a List with items. It writes one JSON
// line per object: {"namespace","name","status","message"}. Test tool only: the operator never
// runs it; tests/integration/test_health_conventions.py compares its verdicts with the phases.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var doc map[string]interface{}
	// apimachinery's decoder keeps whole numbers as int64, as unstructured accessors expect
	if err := k8sjson.Unmarshal(raw, &doc); err != nil {
		fail("stdin is not a JSON object: %v", err)
	}
	objects := []map[string]interface{}{doc}
	if items, ok := doc["items"].([]interface{}); ok {
		objects = objects[:0]
		for _, item := range items {
			obj, ok := item.(map[string]interface{})
			if !ok {
				fail("a List item is not an object")
			}
			objects = append(objects, obj)
		}
	}
	out := json.NewEncoder(os.Stdout)
	for _, obj := range objects {
		u := &unstructured.Unstructured{Object: obj}
		result, err := status.Compute(u)
		if err != nil {
			fail("kstatus of %s/%s: %v", u.GetNamespace(), u.GetName(), err)
		}
		if err := out.Encode(verdict{u.GetNamespace(), u.GetName(), result.Status.String(), result.Message}); err != nil {
			fail("writing: %v", err)
		}
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}

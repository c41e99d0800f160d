// kstatus: the real sigs.k8s.io/cli-utils kstatus (status.Compute) on Kubernetes objects.
//
// Reads JSON or YAML objects from stdin (one object, a List, or a YAML/JSON stream) and prints
// one JSON line per object: {"kind", "namespace", "name", "status", "message"}, where status is
// kstatus' verdict (InProgress, Failed, Current, Terminating, NotFound, Unknown).
// Built by tests/tools.py; used by the GitOps health tests.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func emit(enc *json.Encoder, raw []byte) error {
	u := &unstructured.Unstructured{}
	// UnmarshalJSON keeps integers as int64 (kstatus reads metadata.generation as one).
	if err := u.UnmarshalJSON(raw); err != nil {
		return err
	}
	if u.IsList() {
		list, err := u.ToList()
		if err != nil {
			return err
		}
		for i := range list.Items {
			item, err := list.Items[i].MarshalJSON()
			if err != nil {
				return err
			}
			if err := emit(enc, item); err != nil {
				return err
			}
		}
		return nil
	}
	res, err := status.Compute(u)
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return enc.Encode(verdict{u.GetKind(), u.GetNamespace(), u.GetName(), res.Status.String(), res.Message})
}

func main() {
	dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(os.Stdin), 4096)
	enc := json.NewEncoder(os.Stdout)
	for {
		var obj json.RawMessage
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(2)
		}
		if len(obj) == 0 || string(obj) == "null" {
			continue
		}
		if err := emit(enc, obj); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
	}
}

//go:build tools

// Package netpol pins kube-router's module in this module's build list; the binary is built with
// `go build github.com/cloudnativelabs/kube-router/v2/cmd/kube-router` from here.
package netpol

import _ "github.com/cloudnativelabs/kube-router/v2/pkg/cmd"

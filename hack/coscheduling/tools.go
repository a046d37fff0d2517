//go:build tools

// Package tools pins scheduler-plugins' own kube-scheduler build (cmd/scheduler, which
// registers Coscheduling), the `coscheduling` peer of benchmarks/kwok_placement.py
// (hack/build-coscheduling.sh). A module's replace directives bind only in the main
// module, so go.mod repeats scheduler-plugins' own: every k8s.io staging module at the
// Kubernetes 1.34.1 it was released against, not whatever newer version minimal version
// selection would otherwise pick.
package tools

import (
	_ "sigs.k8s.io/scheduler-plugins/cmd/scheduler"
)

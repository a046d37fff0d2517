//go:build tools

// Package tools pins the workload controllers localcluster runs (JobSet, LeaderWorkerSet,
// training-operator v1), so `go mod tidy` keeps their dependencies. One module for the
// three: Go's minimal version selection resolves one dependency graph for them
// (k8s.io/* v0.35, controller-runtime v0.22, JobSet's), so they share one build; the
// training-operator then runs against newer client libraries than its own go.mod names,
// which its integration test covers.
package tools

import (
	_ "github.com/kubeflow/training-operator/cmd/training-operator.v1"
	_ "sigs.k8s.io/jobset"
	_ "sigs.k8s.io/lws/cmd"
)

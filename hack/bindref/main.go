// Command bindref is the reference binder Phalanx's bind rate is measured against: the
// same `pods/binding` POSTs through client-go, the client kube-scheduler binds with.
//
// It reads "namespace/pod node" lines (stdin, or -input), warms the connection with one
// GET /version, then binds every pod with -workers goroutines and prints one JSON line:
// binds, failures, seconds, binds_per_s and the CPU it spent on the binds (getrusage
// around the bind window only, so start-up and kubeconfig parsing do not count).
//
// Client-side rate limiting is off (QPS < 0), as kube-scheduler runs on big clusters;
// requests go as protobuf (kube-scheduler's content type) over one HTTP/2 connection,
// client-go's default transport. -content-type json measures the JSON path instead.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type triple struct{ namespace, name, node string }

type result struct {
	Binds       int     `json:"binds"`
	Failures    int     `json:"failures"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`
	BindsPerS   float64 `json:"binds_per_s"`
	CPUSeconds  float64 `json:"cpu_s"`
	Workers     int     `json:"workers"`
	ContentType string  `json:"content_type"`
	ClientGo    string  `json:"client"`
}

func readTriples(in io.Reader) ([]triple, error) {
	var out []triple
	scanner := bufio.NewScanner(in)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) == 0 {
			continue
		}
		key := strings.SplitN(fields[0], "/", 2)
		if len(fields) != 2 || len(key) != 2 {
			return nil, fmt.Errorf("want \"namespace/pod node\", got %q", scanner.Text())
		}
		out = append(out, triple{key[0], key[1], fields[1]})
	}
	return out, scanner.Err()
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	input := flag.String("input", "-", "file of \"namespace/pod node\" lines, - for stdin")
	workers := flag.Int("workers", 128, "binds in flight")
	contentType := flag.String("content-type", "protobuf", "protobuf or json")
	flag.Parse()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fail(err)
	}
	config.QPS, config.Burst = -1, 0
	config.UserAgent = "phalanx-bindref"
	switch *contentType {
	case "protobuf":
		config.ContentType = "application/vnd.kubernetes.protobuf"
		config.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	case "json":
		config.ContentType = "application/json"
	default:
		fail(fmt.Errorf("-content-type: protobuf or json, not %q", *contentType))
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		fail(err)
	}
	reader := io.Reader(os.Stdin)
	if *input != "-" {
		file, err := os.Open(*input)
		if err != nil {
			fail(err)
		}
		defer file.Close()
		reader = file
	}
	work, err := readTriples(reader)
	if err != nil {
		fail(err)
	}
	if _, err := client.Discovery().ServerVersion(); err != nil { // TLS + HTTP/2 set up
		fail(err)
	}

	ctx := context.Background()
	var next atomic.Int64
	var failures atomic.Int64
	var firstError atomic.Value
	var wg sync.WaitGroup
	cpu0, start := cpuSeconds(), time.Now()
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(work) {
					return
				}
				t := work[i]
				binding := &corev1.Binding{
					ObjectMeta: metav1.ObjectMeta{Namespace: t.namespace, Name: t.name},
					Target:     corev1.ObjectReference{Kind: "Node", Name: t.node},
				}
				err := client.CoreV1().Pods(t.namespace).Bind(ctx, binding, metav1.CreateOptions{})
				if err != nil {
					failures.Add(1)
					firstError.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	seconds, cpu := time.Since(start).Seconds(), cpuSeconds()-cpu0
	out := result{Binds: len(work), Failures: int(failures.Load()), Seconds: seconds,
		BindsPerS: float64(len(work)) / seconds, CPUSeconds: cpu, Workers: *workers,
		ContentType: config.ContentType, ClientGo: "client-go " + clientGoVersion()}
	if message, ok := firstError.Load().(string); ok {
		out.FirstError = message
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

// clientGoVersion is client-go's version as linked (from the build info, so go.mod is
// the one place it is set).
func clientGoVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "k8s.io/client-go" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bindref:", err)
	os.Exit(1)
}

// Package e2e holds wsmesh's end-to-end tests: they build the wsmesh binary
// once and run it as a real process against real peers (the Python
// websockets library, curl-like raw HTTP, other wsmesh processes), on
// loopback only, with every process stopped by PID when its test ends.
//
// The helpers in this file are shared by every e2e test file:
//
//   - wsmeshBin: path of the wsmesh binary built by TestMain.
//   - freePort, waitForPort: pick and wait for loopback ports.
//   - startProcess, processOutput, processLines, waitOutput,
//     processRunning, waitProcess: run a background process whose output
//     is kept for failure messages and access-log lines, and which is
//     killed when the test ends.
//   - runProcess: run a process to completion with a given input and
//     timeout, returning its stdout, stderr and exit code.
//   - requirePythonWebsockets: skip (or, on CI, fail) when the Python
//     websockets library is missing.
//
// TestMain also stops the etcd and kube-apiserver that the Kube tests share
// (kubeShared in kube_test.go) after every test has run.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsmesh/wsmesh/internal/testutil"
)

// wsmeshBin is the path of the wsmesh binary built once by TestMain.
var wsmeshBin string

// pythonBin is the system Python, which has websockets 10.4 installed
// (Debian's python3-websockets); a python3 earlier on PATH may not.
const pythonBin = "/usr/bin/python3"

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		fmt.Fprintf(os.Stderr, "e2e: cannot find the module root (go env GOMOD: %q, %v)\n", gomod, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "wsmesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	wsmeshBin = filepath.Join(dir, "wsmesh")
	build := exec.Command("go", "build", "-o", wsmeshBin, "./cmd/wsmesh")
	build.Dir = filepath.Dir(gomod)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building wsmesh: %v\n%s", err, out)
		return 1
	}
	// The etcd and kube-apiserver the Kube tests share, if one started
	// them: killed by PID whatever the tests' results.
	defer kubeShared.stop()
	return m.Run()
}

// freePort is testutil.FreePort.
var freePort = testutil.FreePort

// waitForPort waits up to 10 seconds until addr (host:port) accepts TCP
// connections, failing the test otherwise.
func waitForPort(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waitForPort: %s not accepting connections after 10s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer is testutil.Lines: a buffer safe for a writer and a test
// reading at the same time.
type lockedBuffer = testutil.Lines

// procState is what startProcess keeps about a process.
type procState struct {
	out  *testutil.Lines // standard output and standard error
	done chan struct{}   // closed once the process has been waited for
	err  error           // cmd.Wait's result, set before done is closed
}

var procs sync.Map // *exec.Cmd -> *procState

// startProcess starts args[0] with arguments args[1:] (use wsmeshBin or
// pythonBin as args[0]). Standard output and standard error both go to a
// buffer read with processOutput and logged if the test fails. When the
// test ends the process is killed by its PID (if still running) and waited
// for. Use waitProcess to wait for it to exit on its own.
func startProcess(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	if len(args) == 0 {
		t.Fatal("startProcess: no command")
	}
	cmd := exec.Command(args[0], args[1:]...)
	st := &procState{out: &testutil.Lines{LineFormat: testutil.LineFormat{SkipText: true}}, done: make(chan struct{})}
	cmd.Stdout = st.out
	cmd.Stderr = st.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("startProcess %q: %v", args, err)
	}
	procs.Store(cmd, st)
	go func() {
		st.err = cmd.Wait()
		close(st.done)
	}()
	t.Cleanup(func() {
		select {
		case <-st.done:
		default:
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-st.done
		}
		procs.Delete(cmd)
		if t.Failed() {
			t.Logf("output of %q (pid %d):\n%s", args, cmd.Process.Pid, st.out.String())
		}
	})
	return cmd
}

// processOutput returns what a process started by startProcess has written
// to standard output and standard error so far.
func processOutput(cmd *exec.Cmd) string {
	if st, ok := procs.Load(cmd); ok {
		return st.(*procState).out.String()
	}
	return ""
}

// processLines returns the output of a process started by startProcess,
// whose Records and Wait read the JSON lines in it (an access log written to
// standard output) and pass over the rest (the process's own log).
func processLines(cmd *exec.Cmd) *testutil.Lines {
	if st, ok := procs.Load(cmd); ok {
		return st.(*procState).out
	}
	return &testutil.Lines{}
}

// waitOutput waits up to timeout until a process started by startProcess
// has printed text, failing the test if it exits first or time runs out.
func waitOutput(t testing.TB, cmd *exec.Cmd, text string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(processOutput(cmd), text) {
		if !processRunning(cmd) && !strings.Contains(processOutput(cmd), text) {
			t.Fatalf("%q exited without printing %q:\n%s", cmd.Args[:min(len(cmd.Args), 3)], text, processOutput(cmd))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q did not print %q within %v:\n%s", cmd.Args[:min(len(cmd.Args), 3)], text, timeout, processOutput(cmd))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitProcess waits up to timeout for a process started by startProcess to
// exit and returns its exit code (-1 if it was killed by a signal). It fails
// the test if the process is still running after timeout.
func waitProcess(t testing.TB, cmd *exec.Cmd, timeout time.Duration) int {
	t.Helper()
	v, ok := procs.Load(cmd)
	if !ok {
		t.Fatal("waitProcess: process not started by startProcess")
	}
	st := v.(*procState)
	select {
	case <-st.done:
	case <-time.After(timeout):
		t.Fatalf("process %q (pid %d) still running after %v; output:\n%s", cmd.Args, cmd.Process.Pid, timeout, st.out.String())
	}
	return exitCode(st.err)
}

// processRunning reports whether a process started by startProcess has not
// exited yet.
func processRunning(cmd *exec.Cmd) bool {
	v, ok := procs.Load(cmd)
	if !ok {
		return false
	}
	select {
	case <-v.(*procState).done:
		return false
	default:
		return true
	}
}

// processResult is the outcome of runProcess.
type processResult struct {
	Stdout   string
	Stderr   string
	ExitCode int // -1 when killed by a signal, including on timeout
}

// runProcess runs args[0] with arguments args[1:] to completion with stdin
// as its standard input. If it has not exited after timeout it is killed by
// PID and the test fails.
func runProcess(t testing.TB, stdin string, timeout time.Duration, args ...string) processResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Cancel = func() error { return syscall.Kill(cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := processResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: exitCode(err)}
	if ctx.Err() != nil {
		t.Fatalf("runProcess %q: killed after %v\nstdout:\n%s\nstderr:\n%s", args, timeout, res.Stdout, res.Stderr)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("runProcess %q: %v", args, err)
	}
	return res
}

func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		return -1
	}
}

// requirePythonWebsockets skips the test when pythonBin cannot import the
// websockets library, except on CI (CI=true) where a missing library is a
// broken environment and fails the test.
func requirePythonWebsockets(t testing.TB) {
	t.Helper()
	out, err := exec.Command(pythonBin, "-c", "import websockets").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s cannot import websockets: %v\n%s", pythonBin, err, out)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

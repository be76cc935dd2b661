// Command wsmesh is a service-mesh sidecar proxy built first for WebSocket
// traffic, together with the workloads of its guide (an echo server and an
// interactive client). Each subcommand lives in its own file and only wires
// flags to the internal packages that do the work.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "wsmesh",
	Short:         "wsmesh: a WebSocket-first service-mesh sidecar",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "wsmesh:", err)
		os.Exit(exitCode(err))
	}
}

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}

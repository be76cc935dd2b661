package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/wsmesh/wsmesh/internal/inject"
)

func init() {
	var (
		opts    = inject.DefaultOptions()
		inFile  string
		outFile string
		quiet   bool
	)
	cmd := &cobra.Command{
		Use:   "inject -f FILE [-o OUT]",
		Short: "Add the wsmesh sidecar to Kubernetes manifests (like istioctl kube-inject)",
		Long: `Add the wsmesh sidecar to Kubernetes manifests, like istioctl kube-inject.

Every Pod, and the pod template of every Deployment, StatefulSet, DaemonSet
and ReplicaSet (also inside a List), gets:
  - the container wsmesh-proxy: wsmesh sidecar --intercept as uid 1337,
    ports 15001 (outbound), 15006 (inbound), 15000 (admin, readiness /ready),
    POD_NAME and POD_NAMESPACE from the downward API, the mesh
    configuration from a ConfigMap mounted at /etc/wsmesh/config;
  - the init container wsmesh-init: wsmesh init-iptables as root with
    NET_ADMIN and NET_RAW;
  - the annotation sidecar.wsmesh.io/status.
Other documents are copied unchanged; so are pods already injected, pods
annotated sidecar.wsmesh.io/inject: "false" and hostNetwork pods. Injecting
twice changes nothing. Use - for standard input or output.

  wsmesh inject -f websockets-server.yaml | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if inFile == "" {
				return &exitError{code: 2, err: fmt.Errorf("-f is required (a file, or - for standard input)")}
			}
			var in []byte
			var err error
			if inFile == "-" {
				in, err = io.ReadAll(cmd.InOrStdin())
			} else {
				in, err = os.ReadFile(inFile)
			}
			if err != nil {
				return err
			}
			res, err := inject.Inject(in, opts)
			if err != nil {
				return fmt.Errorf("%s: %w", inFile, err)
			}
			if outFile == "" || outFile == "-" {
				if _, err := cmd.OutOrStdout().Write(res.Output); err != nil {
					return err
				}
			} else if err := os.WriteFile(outFile, res.Output, 0o644); err != nil {
				return err
			}
			if !quiet {
				for _, w := range res.Injected {
					fmt.Fprintln(cmd.ErrOrStderr(), "wsmesh inject: injected", w)
				}
				for _, s := range res.Skipped {
					fmt.Fprintln(cmd.ErrOrStderr(), "wsmesh inject: skipped", s)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&inFile, "filename", "f", "", "manifest file to inject (- for standard input)")
	f.StringVarP(&outFile, "output", "o", "", "write the result here (default: standard output)")
	f.StringVar(&opts.Image, "image", opts.Image, "image of the injected containers (holds wsmesh and iptables)")
	f.StringVar(&opts.ImagePullPolicy, "image-pull-policy", opts.ImagePullPolicy, "imagePullPolicy of the injected containers")
	f.StringVar(&opts.ConfigMap, "config-map", opts.ConfigMap, "ConfigMap with the mesh configuration, mounted at "+inject.ConfigMountPath+" (\"\": none)")
	f.BoolVar(&opts.WorkloadFromPod, "workload-from-pod", false, "name the workload $(POD_NAMESPACE)/$(POD_NAME) also for pod templates (default: the Deployment's, StatefulSet's... name)")
	f.StringArrayVar(&opts.SidecarArgs, "sidecar-arg", nil, "extra argument for wsmesh sidecar (repeatable)")
	f.StringArrayVar(&opts.InitArgs, "init-arg", nil, "extra argument for wsmesh init-iptables (repeatable), e.g. --init-arg=--exclude-outbound-cidrs=169.254.169.254/32")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not list what was injected and skipped on standard error")
	rootCmd.AddCommand(cmd)
}

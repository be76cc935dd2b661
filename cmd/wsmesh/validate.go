package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wsmesh/wsmesh/internal/config"
)

func init() {
	var configs []string
	cmd := &cobra.Command{
		Use:   "validate [--config] DIR_OR_FILE...",
		Short: "Check configuration files and print every error and warning",
		RunE: func(cmd *cobra.Command, args []string) error {
			configs := append(append([]string(nil), configs...), args...)
			if len(configs) == 0 {
				return &exitError{code: 2, err: fmt.Errorf("--config is required")}
			}
			snap, err := config.Load(configs...)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, w := range snap.Warnings {
				fmt.Fprintln(out, "warning:", w)
			}
			fmt.Fprintf(out, "configuration valid: %d clusters, version %s\n", len(snap.Clusters()), snap.Version)
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&configs, "config", "c", nil, "configuration file or directory (repeatable)")
	rootCmd.AddCommand(cmd)
}

// Command controlplane is the real Kubernetes control plane in one multi-call binary, so the
// sandbox can put Kubernetes' own kube-apiserver, kube-controller-manager and kube-scheduler
// (and the etcd they store in, and kubectl to check them with) under KubeTunnel's tests.
//
//	controlplane apiserver|controller-manager|scheduler|etcd|kubectl [FLAGS...]
//	controlplane version
//
// Each subcommand runs the component's own command with its own flags, exactly as the
// component's release binary does; only the dispatch on the first argument is ours.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	_ "time/tzdata" // CronJob time zones, as kube-controller-manager's own main does

	"go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's client auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = "usage: controlplane apiserver|controller-manager|scheduler|etcd|kubectl|version [FLAGS...]"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	name := os.Args[1]
	// Each component parses os.Args[1:] itself: drop our own name so it sees only its flags.
	os.Args = append([]string{name}, os.Args[2:]...)
	switch name {
	case "apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "etcd":
		etcdmain.Main(os.Args)
	case "kubectl":
		logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) //nolint:errcheck // as kubectl's main
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	case "version":
		printVersions()
	default:
		fmt.Fprintf(os.Stderr, "controlplane: unknown component %q\n%s\n", name, usage)
		os.Exit(2)
	}
}

// printVersions names the module versions this binary was built from, one per line.
func printVersions() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Println("controlplane: no build information")
		return
	}
	for _, dep := range info.Deps {
		switch dep.Path {
		case "k8s.io/kubernetes", "go.etcd.io/etcd/server/v3":
			fmt.Printf("%s %s\n", dep.Path, dep.Version)
		}
	}
}

// Command goms starts goms projects.
//
//	goms new [-service pkg.v1.NameService] [-replace DIR] MODULE_PATH
//
// writes, in a directory named after the last element of MODULE_PATH, a
// service that builds and passes its tests right away: its proto (unary
// CRUD methods, a server-streaming Watch, google.api.http routes,
// buf.validate rules), the generated code, main.go with config.yaml, an
// in-memory implementation, tests in every protocol through goms/gomstest,
// a Makefile, a Dockerfile and Kubernetes manifests. Run it with
//
//	go run github.com/reversTeam/go-ms/cmd/goms@latest new example.com/shop
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "goms:", err)
		}
		os.Exit(2)
	}
}

const usage = `goms starts goms projects.

Usage:

	goms new [-service pkg.v1.NameService] [-replace DIR] MODULE_PATH

Run "goms new -h" for its flags.
`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return errors.New("no command")
		}
		return nil
	}
	switch args[0] {
	case "new":
		return runNew(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func runNew(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("goms new", flag.ContinueOnError)
	fs.SetOutput(stderr)
	service := fs.String("service", "", `the service's full name, "package.vN.NameService" (default: from the module path's last element, "shop" giving shop.v1.ShopService)`)
	replace := fs.String("replace", "", "use the goms module in this directory (a replace directive), to develop goms itself")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: goms new [-service pkg.v1.NameService] [-replace DIR] MODULE_PATH")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Writes a goms service in a new directory named after MODULE_PATH's last element.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("new: want one module path, such as example.com/shop")
	}
	p, err := newProject(fs.Arg(0), *service, *replace)
	if err != nil {
		return fmt.Errorf("new: %w", err)
	}
	if err := p.write(stderr); err != nil {
		return fmt.Errorf("new: %w", err)
	}
	fmt.Fprintf(stdout, "Wrote %s (%s) in %s. Next:\n\n\tcd %s\n\tmake run    # serves it on 127.0.0.1:8080\n\tmake test   # tests it in every protocol\n",
		p.Module, p.ProtoPackage+"."+p.Service, p.Dir, p.Dir)
	return nil
}

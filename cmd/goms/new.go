package main

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"text/template"
	"unicode"

	"golang.org/x/mod/module"
)

// gomsModule is the module path of goms, which new projects require.
const gomsModule = "github.com/reversTeam/go-ms"

// unknownVersion is the version a requirement that a replace directive
// satisfies takes.
const unknownVersion = "v0.0.0-00010101000000-000000000000"

// template holds the files of a new project. Files named *.tmpl are
// text/template documents over a project; the others are copied as they
// are. third_party/ is copied from goms's own by `make generate`.
//
//go:embed all:template
var templates embed.FS

// project is what the templates of a new project are filled with.
type project struct {
	Module       string // example.com/shop
	Dir          string // where it is written: shop
	Name         string // the binary and Kubernetes name: shop
	ProtoPackage string // shop.v1
	ProtoDir     string // shop/v1
	ProtoFile    string // shop (.proto)
	Service      string // ShopService
	GoPackage    string // shopv1
	GenImport    string // example.com/shop/gen/shop/v1
	// ConnectImport is the import path of the generated connect code.
	ConnectImport string
	GomsVersion   string
	Replace       string // an absolute directory, or ""
}

// serviceName is a protobuf package with a version (buf lint's
// PACKAGE_VERSION_SUFFIX) and a service named *Service (SERVICE_SUFFIX).
var serviceName = regexp.MustCompile(`^([a-z][a-z0-9_]*\.)+v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?\.[A-Z][A-Za-z0-9]*Service$`)

func newProject(modulePath, service, replace string) (*project, error) {
	if err := module.CheckPath(modulePath); err != nil {
		return nil, fmt.Errorf("module path %q: %v; a module path looks like example.com/shop or github.com/you/shop", modulePath, err)
	}
	prefix, _, _ := module.SplitPathVersion(modulePath)
	dir := path.Base(prefix)
	p := &project{Module: modulePath, Dir: dir, Name: kubeName(dir)}
	if entries, err := os.ReadDir(p.Dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("directory %s exists and is not empty: remove it, or choose a module path whose last element names a new directory", p.Dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("directory %s: %v", p.Dir, err)
	}
	if service == "" {
		name := strings.Map(func(r rune) rune {
			if r < unicode.MaxASCII && (unicode.IsLower(r) || unicode.IsDigit(r)) {
				return r
			}
			if r < unicode.MaxASCII && unicode.IsUpper(r) {
				return unicode.ToLower(r)
			}
			return -1
		}, dir)
		if name == "" || !unicode.IsLetter(rune(name[0])) {
			return nil, fmt.Errorf("no service name can be made from %q: name it with -service, such as -service shop.v1.ShopService", dir)
		}
		service = name + ".v1." + strings.ToUpper(name[:1]) + name[1:] + "Service"
	}
	if !serviceName.MatchString(service) {
		return nil, fmt.Errorf(`service %q: want "package.vN.NameService", such as shop.v1.ShopService: a lower-case package ending in a version (v1, v2beta1), then a name in CamelCase ending in "Service"`, service)
	}
	i := strings.LastIndexByte(service, '.')
	p.ProtoPackage, p.Service = service[:i], service[i+1:]
	segments := strings.Split(p.ProtoPackage, ".")
	p.ProtoDir = strings.Join(segments, "/")
	p.GoPackage = strings.ReplaceAll(segments[len(segments)-2], "_", "") + segments[len(segments)-1]
	p.ProtoFile = snake(strings.TrimSuffix(p.Service, "Service"))
	if p.ProtoFile == "" {
		p.ProtoFile = "service"
	}
	p.GenImport = modulePath + "/gen/" + p.ProtoDir
	p.ConnectImport = p.GenImport + "/" + p.GoPackage + "connect"

	if replace != "" {
		abs, err := filepath.Abs(replace)
		if err != nil {
			return nil, fmt.Errorf("-replace %q: %v", replace, err)
		}
		if _, err := os.Stat(filepath.Join(abs, "goms", "server.go")); err != nil {
			return nil, fmt.Errorf("-replace %q: not a goms checkout (no goms/server.go)", replace)
		}
		p.Replace = abs
	}
	p.GomsVersion = gomsVersion()
	if p.GomsVersion == "" {
		if p.Replace == "" {
			return nil, fmt.Errorf("this goms command was built from a checkout and knows no goms version: run it as go run %s/cmd/goms@latest, or pass -replace with the checkout's directory", gomsModule)
		}
		p.GomsVersion = unknownVersion
	}

	return p, nil
}

// gomsVersion returns the version of goms this command was built from, or
// "" for a build from a checkout.
func gomsVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok || info.Main.Path != gomsModule || info.Main.Version == "" || info.Main.Version == "(devel)" {
		return ""
	}
	return info.Main.Version
}

// kubeName turns a directory name into a DNS label for Kubernetes names.
func kubeName(dir string) string {
	name := strings.Trim(strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '-'
	}, dir), "-")
	if name == "" {
		return "service"
	}
	return name
}

// snake turns CamelCase into lower_snake_case.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// write writes the project, generates its code and tidies its module,
// removing everything it wrote when a step fails.
func (p *project) write(log io.Writer) (err error) {
	created := false
	if _, statErr := os.Stat(p.Dir); errors.Is(statErr, fs.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if created {
				_ = os.RemoveAll(p.Dir)
			} else {
				entries, _ := os.ReadDir(p.Dir)
				for _, e := range entries {
					_ = os.RemoveAll(filepath.Join(p.Dir, e.Name()))
				}
			}
		}
	}()
	if err := p.writeFiles(); err != nil {
		return err
	}
	fmt.Fprintln(log, "goms: generating gen/ with buf (its first build takes a minute)")
	if err := p.goCmd(log, "tool", "-modfile=tools/go.mod", "buf", "generate"); err != nil {
		return fmt.Errorf("buf generate: %w", err)
	}
	if err := p.goCmd(log, "mod", "tidy"); err != nil {
		return fmt.Errorf("go mod tidy: %w", err)
	}
	return nil
}

func (p *project) writeFiles() error {
	err := fs.WalkDir(templates, "template", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := templates.ReadFile(name)
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(name, "template/")
		if rel == "proto/service.proto.tmpl" {
			rel = "proto/" + p.ProtoDir + "/" + p.ProtoFile + ".proto.tmpl"
		}
		if out, ok := strings.CutSuffix(rel, ".tmpl"); ok {
			t, err := template.New(rel).Option("missingkey=error").Parse(string(data))
			if err != nil {
				return fmt.Errorf("template %s: %w", rel, err)
			}
			var b bytes.Buffer
			if err := t.Execute(&b, p); err != nil {
				return fmt.Errorf("template %s: %w", rel, err)
			}
			rel, data = out, b.Bytes()
		}
		return p.writeFile(rel, data)
	})
	if err != nil {
		return err
	}
	gomod := fmt.Sprintf("module %s\n\ngo 1.26.0\n\nrequire %s %s\n", p.Module, gomsModule, p.GomsVersion)
	if p.Replace != "" {
		gomod += fmt.Sprintf("\nreplace %s => %s\n", gomsModule, p.Replace)
	}
	return p.writeFile("go.mod", []byte(gomod))
}

func (p *project) writeFile(rel string, data []byte) error {
	name := filepath.Join(p.Dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	return os.WriteFile(name, data, 0o644)
}

// goCmd runs the go command in the project, outside any workspace.
func (p *project) goCmd(log io.Writer, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	cmd.Stdout, cmd.Stderr = log, log
	return cmd.Run()
}

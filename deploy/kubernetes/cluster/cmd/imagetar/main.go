// Command imagetar writes a one-layer image as a docker-archive tarball (the
// format of `docker save`), which `ctr images import` loads into
// containerd: the files given, the image's entrypoint and user. It makes
// the images of the cluster from binaries built here, since no registry
// can be reached.
//
//	imagetar -o goms.tar -name goms-distributed:dev -entrypoint /distributed \
//		-user 65532:65532 bin/distributed=/distributed
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"runtime"
	"strings"
	"time"
)

func main() {
	out := flag.String("o", "", "the tarball to write (required)")
	name := flag.String("name", "", "the image's reference, NAME:TAG (required)")
	entrypoint := flag.String("entrypoint", "", "the image's entrypoint, a path in the image (required)")
	user := flag.String("user", "", "the image's USER, uid:gid (default: root)")
	flag.Parse()
	if err := run(*out, *name, *entrypoint, *user, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "imagetar:", err)
		os.Exit(1)
	}
}

func run(out, name, entrypoint, user string, files []string) error {
	if out == "" || name == "" || entrypoint == "" || len(files) == 0 {
		return errors.New("usage: imagetar -o FILE -name NAME:TAG -entrypoint PATH [-user UID:GID] SRC=DEST...")
	}
	layer, err := layerTar(files)
	if err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer)
	diffID := "sha256:" + hex.EncodeToString(layerSum[:])
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      time.Unix(0, 0).UTC(),
		"config":       map[string]any{"Entrypoint": []string{entrypoint}, "User": user},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := hex.EncodeToString(layerSum[:]) + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": configName, "RepoTags": []string{name}, "Layers": []string{layerName},
	}})
	if err != nil {
		return err
	}
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	for _, f := range []struct {
		name string
		data []byte
	}{{configName, config}, {layerName, layer}, {"manifest.json", manifest}} {
		if err := writeFile(tw, f.name, 0o644, f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(out, archive.Bytes(), 0o644)
}

// layerTar makes the layer: each SRC=DEST file, executable, with the
// directories above it.
func layerTar(files []string) ([]byte, error) {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	dirs := map[string]bool{}
	for _, spec := range files {
		src, dest, ok := strings.Cut(spec, "=")
		if !ok || !path.IsAbs(dest) {
			return nil, fmt.Errorf("%q: want SRC=DEST with an absolute DEST", spec)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		dest = strings.TrimPrefix(path.Clean(dest), "/")
		var parents []string
		for dir := path.Dir(dest); dir != "."; dir = path.Dir(dir) {
			parents = append([]string{dir}, parents...)
		}
		for _, dir := range parents {
			if !dirs[dir] {
				dirs[dir] = true
				hdr := &tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: time.Unix(0, 0)}
				if err := tw.WriteHeader(hdr); err != nil {
					return nil, err
				}
			}
		}
		if err := writeFile(tw, dest, 0o755, data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return layer.Bytes(), nil
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

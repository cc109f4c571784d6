//go:build ignore

// Pack gzips the bundle esbuild wrote to build/ into dist/, which goms
// embeds: a third of the size in every program's binary. The output
// depends only on the input (no name, no time in the header).
//
//	go run pack.go
package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
)

func main() {
	for _, name := range []string{"docs.js", "docs.css"} {
		data, err := os.ReadFile("build/" + name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(data)
		if err := zw.Close(); err == nil {
			err = os.WriteFile("dist/"+name+".gz", buf.Bytes(), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("dist/%s.gz: %d bytes (%d before)\n", name, buf.Len(), len(data))
	}
}

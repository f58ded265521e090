// Package web holds the browser side of the bridge: the built demo page and
// client library, embedded so that the bridge binary needs no Node.js.
package web

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// Dist is the built demo page: index.html and its assets at the root.
var Dist, _ = fs.Sub(dist, "dist")

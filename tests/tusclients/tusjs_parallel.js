// Upload a file with tus-js-client under node in parallel partial uploads
// (its parallelUploads option), each partial carrying the file's name in its
// metadata; print DONE, or ERROR and exit 1.
//   node tusjs_parallel.js TUS_JS_CLIENT_DIR ENDPOINT FILE NAME PARTS
"use strict";
const fs = require("fs");
const [clientDir, endpoint, path, name, parts] = process.argv.slice(2);
const tus = require(clientDir);

// A read stream with a path is read as a file, in slices (parallel
// uploads take no uploadSize).
const upload = new tus.Upload(fs.createReadStream(path), {
  endpoint,
  metadata: { filename: name },
  parallelUploads: Number(parts),
  metadataForPartialUploads: { filename: name },
  retryDelays: [],
  onError: (error) => {
    console.log("ERROR " + error);
    process.exit(1);
  },
  onSuccess: () => {
    console.log("URL " + upload.url);
    console.log("DONE");
  },
});
upload.start();

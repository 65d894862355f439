// Upload a file with tus-js-client (the tus project's JavaScript client)
// under node, retrying from the server's offset after a failure; print
// DONE, or ERROR and exit 1.  With PARTS, the file goes in that many
// parallel partial uploads (its parallelUploads option) of 5 MiB requests,
// each carrying PARTIAL_NAME (by default NAME) as the filename in its
// metadata, and nothing is retried.
//   node tusjs_upload.js TUS_JS_CLIENT_DIR ENDPOINT FILE NAME [PARTS [PARTIAL_NAME]]
"use strict";
const fs = require("fs");
const [clientDir, endpoint, path, name, parts, partialName] = process.argv.slice(2);
const tus = require(clientDir);

// A read stream with a path is read as a file, in slices (parallel
// uploads take no uploadSize).
const options = parts
  ? {
      parallelUploads: Number(parts),
      chunkSize: 5 * 1024 * 1024,
      metadataForPartialUploads: { filename: partialName || name },
      retryDelays: [],
    }
  : {
      uploadSize: fs.statSync(path).size,
      retryDelays: [0, 500, 1000, 2000, 3000, 5000, 5000, 5000],
      onProgress: (sent, total) => {
        if (sent >= total / 4 && !upload.quarter) {
          upload.quarter = true;
          console.log("QUARTER " + sent);
        }
      },
    };
const upload = new tus.Upload(fs.createReadStream(path), {
  endpoint,
  metadata: { filename: name },
  ...options,
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

// Upload a file with tus-js-client (the tus project's JavaScript client)
// under node, retrying from the server's offset after a failure.
//   node tusjs_upload.js TUS_JS_CLIENT_DIR ENDPOINT FILE NAME
"use strict";
const fs = require("fs");
const [clientDir, endpoint, path, name] = process.argv.slice(2);
const tus = require(clientDir);

const upload = new tus.Upload(fs.createReadStream(path), {
  endpoint,
  uploadSize: fs.statSync(path).size,
  metadata: { filename: name },
  retryDelays: [0, 500, 1000, 2000, 3000, 5000, 5000, 5000],
  onProgress: (sent, total) => {
    if (sent >= total / 4 && !upload.quarter) {
      upload.quarter = true;
      console.log("QUARTER " + sent);
    }
  },
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

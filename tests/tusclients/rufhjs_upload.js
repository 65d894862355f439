// Upload a file with tus-js-client speaking the IETF resumable upload
// draft (its protocol option: ietf-draft-03 sends interop version 5,
// ietf-draft-05 version 6), retrying from the server's offset after a
// failure; print URL and DONE, or ERROR and exit 1.
//   node rufhjs_upload.js TUS_JS_CLIENT_DIR ENDPOINT FILE NAME PROTOCOL
"use strict";
const fs = require("fs");
const [clientDir, endpoint, path, name, protocol] = process.argv.slice(2);
const tus = require(clientDir);

const upload = new tus.Upload(fs.createReadStream(path), {
  endpoint,
  protocol,
  metadata: { filename: name },
  uploadSize: fs.statSync(path).size,
  retryDelays: [0, 500, 1000, 2000, 3000, 5000, 5000, 5000],
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

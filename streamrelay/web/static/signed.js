// A signed link to the page: /?sr-path=/files/NAME&sr-key=…&sr-expires=…
// [&sr-max-size=…]&sr-signature=… lets a person upload one file, stored as
// NAME, with a PUT signed for that path (see docs/signed-urls.md). This file
// reads the link; app.js uploads with it.
"use strict";

// The grant of the page's link, or null when the page was opened without one.
// A link that is not one the page can use gives {error}.
function signedLink(search) {
  const params = new URLSearchParams(search);
  const path = params.get("sr-path");
  if (path === null) return null;
  // Only a file's own URL on this server: never another host ("//host"),
  // a dot segment a browser would rewrite, a query or a fragment.
  const segments = path.split("/").slice(2);
  if (!path.startsWith("/files/") || segments.length === 0 ||
      segments.some((s) => s === "" || /^(\.|%2e){1,2}$/i.test(s)) || /[?#\\]/.test(path)) {
    return { error: "This upload link is not valid: its path is not a file's." };
  }
  let name;
  try {
    name = segments.map(decodeURIComponent).join("/");
  } catch (e) {
    return { error: "This upload link is not valid: its path is badly escaped." };
  }
  const query = new URLSearchParams();
  for (const key of ["sr-key", "sr-expires", "sr-max-size", "sr-signature"]) {
    const value = params.get(key);
    if (value !== null) query.set(key, value);
  }
  if (!query.has("sr-key") || !query.has("sr-expires") || !query.has("sr-signature")) {
    return { error: "This upload link is not valid: it is not signed." };
  }
  const maxSize = query.has("sr-max-size") ? Number(query.get("sr-max-size")) : null;
  return {
    name,
    url: path + "?" + query.toString(),
    maxSize: maxSize !== null && isFinite(maxSize) ? maxSize : null,
    expires: new Date(Number(query.get("sr-expires")) * 1000),
  };
}

// Send FILE with the signed PUT; call back as tus-js-client's options do.
// Returns what cancel() needs: {abort()}.
function signedPut(grant, file, { onProgress, onSuccess, onError }) {
  const xhr = new XMLHttpRequest();
  xhr.open("PUT", grant.url);
  xhr.upload.onprogress = (event) => onProgress(event.loaded);
  xhr.onload = () => {
    if (xhr.status === 200 || xhr.status === 201) onSuccess(xhr.status, xhr.responseText);
    else onError(xhr.status, xhr.responseText);
  };
  xhr.onerror = () => onError(0, "");
  xhr.send(file);
  return { abort: () => { xhr.abort(); return Promise.resolve(); } };
}

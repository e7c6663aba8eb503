// JSON and NIfTI requests to the medcl annotate server; errors carry the server's message.
async function check(reply) {
  if (reply.ok) return reply;
  let detail = reply.statusText;
  try { detail = (await reply.json()).detail ?? detail; } catch { /* not JSON */ }
  const err = new Error(`${reply.status}: ${detail}`);
  err.status = reply.status;
  throw err;
}

export async function api(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return (await check(await fetch(url, init))).json();
}

export async function putDrawing(url, bytes, version) {
  const headers = { "content-type": "application/octet-stream" };
  if (version) headers["if-match"] = version;
  try {
    return (await check(await fetch(url, { method: "PUT", headers, body: bytes }))).json();
  } catch (err) {
    if (err.status === 409) err.message = "saved elsewhere since this page loaded it (another tab?): reload the case; your strokes are kept here until then";
    throw err;
  }
}

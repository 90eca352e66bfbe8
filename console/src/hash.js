const CHUNK = 4 << 20;

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * Hex SHA-256 of a File. crypto.subtle exists only in secure contexts (https or
 * localhost), and the console is often reached over plain http: then a pure-JS
 * hash, loaded only when needed, reads the file in chunks so that a large model
 * is never held in memory whole.
 */
export async function sha256File(file) {
  const subtle = globalThis.crypto?.subtle;
  if (subtle) return hex(new Uint8Array(await subtle.digest('SHA-256', await file.arrayBuffer())));
  const { sha256 } = await import('@noble/hashes/sha2.js');
  const h = sha256.create();
  for (let at = 0; at < file.size; at += CHUNK) {
    h.update(new Uint8Array(await file.slice(at, at + CHUNK).arrayBuffer()));
  }
  return hex(h.digest());
}

/** The page's HTML and CSS (the script is app.js; the page fills in the rest). */
export function pageHtml(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sam2-lora: crack segmentation in the browser</title>
<link rel="icon" href="data:,">
<style>
  :root { color-scheme: light dark; font-family: system-ui, sans-serif; }
  body { margin: 0 auto; max-width: 1100px; padding: 1rem; }
  header h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  #meta { color: #777; font-size: .9rem; }
  #status { margin: .6rem 0; min-height: 1.4em; }
  #status.error { color: #fff; background: #b3261e; padding: .6rem .8rem; border-radius: 6px; }
  progress { width: 100%; height: .6rem; }
  #drop { border: 2px dashed #888; border-radius: 10px; padding: 1.5rem; text-align: center; margin: .8rem 0; }
  #drop.over { border-color: #e0457b; background: rgba(224, 69, 123, .08); }
  #drop.disabled { opacity: .5; pointer-events: none; }
  .controls { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
  #threshold { width: 16rem; }
  .result { border-top: 1px solid #8884; padding: .8rem 0; }
  .result h2 { font-size: 1rem; margin: 0 0 .4rem; }
  .maps { display: grid; grid-template-columns: 1fr 1fr; gap: .6rem; }
  .maps figure { margin: 0; }
  .maps canvas { width: 100%; height: auto; max-height: 62vh; object-fit: contain; }
  figcaption { font-size: .8rem; color: #777; }
</style>
</head>
<body>
<header>
  <h1>Crack segmentation, on your GPU, in this page</h1>
  <div id="meta">loading…</div>
</header>
<div id="status" role="status"></div>
<progress id="progress" max="1" value="0" hidden></progress>
<div id="drop" class="disabled">
  <p>Drop photos here, or <label><input type="file" id="files" accept="image/*" multiple></label></p>
  <p><small>Photos never leave this device: they are segmented by WebGPU in this tab.</small></p>
</div>
<div class="controls">
  <label>Threshold <input type="range" id="threshold" min="0" max="1" step="any"> <output id="threshold-value"></output></label>
</div>
<main id="results"></main>
<script type="module" src="app.js"></script>
</body>
</html>
`;
}

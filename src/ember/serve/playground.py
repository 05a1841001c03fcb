"""The browser playground served at `GET /`: draw or upload an image, upload a recording, type
text or feature values, or give an LM a prompt; shows the prediction and its probabilities. One page, no
external scripts or styles."""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["playground_html"]

_CSS = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto;color:#222}
figure{margin:0;width:282px}figcaption{font-size:.9rem;color:#555;min-height:2.4em}
canvas{border:1px solid #888;background:#000;touch-action:none}button{margin:.3rem .3rem 0 0;padding:.4rem .9rem}
textarea,input{font-family:monospace}#result{margin-top:1rem}.bar{background:#4a7;height:.9rem;display:inline-block}
table td{padding:.1rem .5rem}pre{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}"""

_JS = """
const KIND = document.body.dataset.kind, TASK = document.body.dataset.task;
function headers(){const h={'content-type':'application/json'};const k=document.getElementById('key').value;if(k)h['X-API-Key']=k;return h;}
function el(tag,text){const e=document.createElement(tag);if(text!==undefined)e.textContent=text;return e;}
function show(pred){
  // Class names come from the run folder (untrusted): textContent only, never innerHTML.
  const box=document.getElementById('result');box.replaceChildren();
  if(pred.label!==undefined){
    box.append(el('h3','prediction'));const h=el('h2',String(pred.label));h.id='label';box.append(h,el('h3','probabilities'));
    const t=el('table');
    for(const [n,p] of Object.entries(pred.probabilities).sort((a,b)=>b[1]-a[1]).slice(0,10)){
      const tr=el('tr'),a=el('td',n),b=el('td'),bar=el('span');bar.className='bar';bar.style.width=Math.round(p*200)+'px';
      b.append(bar,document.createTextNode(' '+p.toFixed(3)));tr.append(a,b);t.append(tr);}
    box.append(t);
  } else { const pre=el('pre',JSON.stringify(pred,null,1));pre.id='label';box.append(pre); }
}
async function predict(item){
  const r=await fetch('/v1/predict',{method:'POST',headers:headers(),body:JSON.stringify({inputs:item})});
  const body=await r.json(); if(!r.ok){const p=el('p',`error ${r.status}: ${body.detail}`);p.id='label';document.getElementById('result').replaceChildren(p);return;}
  show(body.predictions[0]);
}
if(KIND==='image'){
  const c=document.getElementById('pad'),g=c.getContext('2d');let down=false;
  g.fillStyle='#000';g.fillRect(0,0,c.width,c.height);g.strokeStyle='#fff';g.lineWidth=22;g.lineCap='round';
  const pos=e=>{const b=c.getBoundingClientRect();const t=e.touches?e.touches[0]:e;return[t.clientX-b.left,t.clientY-b.top];};
  c.onpointerdown=e=>{down=true;const[x,y]=pos(e);g.beginPath();g.moveTo(x,y);};
  c.onpointermove=e=>{if(!down)return;const[x,y]=pos(e);g.lineTo(x,y);g.stroke();};
  window.onpointerup=()=>{down=false;};
  document.getElementById('clear').onclick=()=>{g.fillStyle='#000';g.fillRect(0,0,c.width,c.height);};
  // The server sends the very tensor it fed the model (de-normalised, at the model's input size):
  // shown upscaled with nearest-neighbour so every input pixel is a visible square.
  function seen(png){
    const im=new Image();im.onload=()=>{const v=document.getElementById('seen'),q=v.getContext('2d');
      q.imageSmoothingEnabled=false;q.clearRect(0,0,v.width,v.height);q.drawImage(im,0,0,v.width,v.height);
      document.getElementById('seen-size').textContent=`(${im.width}\u00d7${im.height} input, shown \u00d7${Math.round(v.width/im.width)})`;
      v.dataset.ready='1';};
    im.src='data:image/png;base64,'+png;
  }
  async function withSaliency(item){
    await predict(item);
    const r=await fetch('/v1/explain',{method:'POST',headers:headers(),body:JSON.stringify({inputs:item})});
    if(!r.ok)return;const body=await r.json(),s=body.saliency;
    if(body.input)seen(body.input);
    const o=document.getElementById('saliency'),q=o.getContext('2d');
    const h=s.length,w=s[0].length,cw=o.width/w,ch=o.height/h;q.clearRect(0,0,o.width,o.height);
    for(let i=0;i<h;i++)for(let j=0;j<w;j++){q.fillStyle=`rgba(255,40,40,${s[i][j].toFixed(3)})`;q.fillRect(j*cw,i*ch,cw,ch);}
    o.dataset.ready='1';
  }
  document.getElementById('send').onclick=()=>withSaliency({image:c.toDataURL('image/png').split(',')[1]});
  document.getElementById('file').onchange=e=>{const f=e.target.files[0];const r=new FileReader();
    r.onload=()=>withSaliency({image:r.result.split(',')[1]});r.readAsDataURL(f);};
} else if(KIND==='audio'){
  document.getElementById('file').onchange=e=>{const f=e.target.files[0];const r=new FileReader();
    r.onload=()=>predict({audio:r.result.split(',')[1]});r.readAsDataURL(f);};
} else if(TASK==='lm'){
  document.getElementById('send').onclick=async()=>{
    const out=document.getElementById('result');const pre=el('pre');pre.id='label';out.replaceChildren(pre);
    pre.textContent=document.getElementById('text').value;
    const r=await fetch('/v1/generate',{method:'POST',headers:headers(),body:JSON.stringify({prompt:pre.textContent,max_new_tokens:200,stream:true})});
    const reader=r.body.getReader(),dec=new TextDecoder();let buf='';
    for(;;){const{done,value}=await reader.read();if(done)break;buf+=dec.decode(value,{stream:true});
      let i;while((i=buf.indexOf('\\n\\n'))>=0){const ev=buf.slice(0,i);buf=buf.slice(i+2);
        const d=ev.replace(/^data: /,'');if(d!=='[DONE]')pre.textContent+=JSON.parse(d).text;}}
  };
} else if(KIND==='tokens'){
  document.getElementById('send').onclick=()=>predict(document.getElementById('text').value);
} else {
  document.getElementById('send').onclick=()=>predict(document.getElementById('text').value.split(/[ ,]+/).filter(s=>s).map(Number));
}
"""


def playground_html(info: Any, run_name: str) -> str:
    kind, task = info.input_kind, info.task
    if kind == "image":
        controls = ('<p>Draw a digit (white on black) or upload an image.</p>'
                    '<div style="display:flex;gap:1rem"><figure><figcaption>your drawing</figcaption>'
                    '<canvas id="pad" width="280" height="280"></canvas></figure>'
                    '<figure><figcaption>what the model sees <span id="seen-size"></span></figcaption>'
                    '<canvas id="seen" width="280" height="280" title="the input tensor the model was given">'
                    '</canvas></figure>'
                    '<figure><figcaption>saliency (where the answer is sensitive)</figcaption>'
                    '<canvas id="saliency" width="280" height="280" title="saliency"></canvas></figure></div>'
                    '<button id="send">Predict</button><button id="clear">Clear</button>'
                    '<input type="file" id="file" accept="image/*">')
    elif kind == "audio":
        controls = ('<p>Upload a recording (WAV or FLAC): it is resampled to the run\'s rate and cut or '
                    'padded to its clip length.</p><input type="file" id="file" accept=".wav,.flac,audio/*">')
    elif task == "lm":
        controls = ('<p>Prompt:</p><textarea id="text" rows="4" cols="70">def </textarea><br>'
                    '<button id="send">Generate</button>')
    elif kind == "tokens":
        controls = '<p>Text:</p><textarea id="text" rows="6" cols="70"></textarea><br><button id="send">Predict</button>'
    else:
        names = ", ".join(info.feature_names) or f"{info.input_shape[0]} values"
        controls = (f'<p>Numbers ({html.escape(names)}), separated by commas:</p>'
                    '<input id="text" size="70"><br><button id="send">Predict</button>')
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Ember — {html.escape(run_name)}</title>'
            f'<style>{_CSS}</style></head><body data-kind="{html.escape(kind)}" data-task="{html.escape(task)}">'
            f'<h1>Ember playground</h1><p>{html.escape(run_name)} — {html.escape(task)}, '
            f'classes: {html.escape(json.dumps(list(info.class_names)))}</p>'
            f'<p>API key (if the server needs one): <input id="key" size="20"></p>{controls}'
            f'<div id="result"></div><script>{_JS}</script></body></html>')

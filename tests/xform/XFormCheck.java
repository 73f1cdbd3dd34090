// Checks an XForm the way ODK Collect opens it, with JavaRosa (the classes of ODK_Validate.jar,
// which bundles it), and more strictly than ODK Validate itself:
//   java -cp ODK_Validate.jar:DIR XFormCheck form.xml [media-dir]
// Parses and initializes the form and steps through every question, adding each repeat once and
// evaluating every choice list; with a media directory the form's jr://file-csv/ instances are
// loaded from it, so a missing file or a CSV without the columns an itemset names fails. Also
// fails a <bind> whose nodeset is not in the main instance, a bind of an unknown type, and a bind
// expression naming a node that does not exist (JavaRosa only logs these). Exit 0: valid.
import java.io.*;
import java.util.*;
import javax.xml.parsers.*;
import org.w3c.dom.*;
import org.javarosa.core.model.*;
import org.javarosa.core.model.condition.*;
import org.javarosa.core.model.data.*;
import org.javarosa.core.model.instance.*;
import org.javarosa.core.model.utils.IPreloadHandler;
import org.javarosa.core.reference.*;
import org.javarosa.core.services.PropertyManager;
import org.javarosa.form.api.*;
import org.javarosa.model.xform.*;
import org.javarosa.xform.util.XFormUtils;
import org.javarosa.xpath.XPathConditional;

public class XFormCheck {
  static final List<String> errors = new ArrayList<>();
  static final Set<String> TYPES = new HashSet<>(Arrays.asList("string", "int", "integer", "long",
      "decimal", "double", "date", "time", "dateTime", "geopoint", "geotrace", "geoshape", "binary",
      "boolean", "select", "select1", "barcode"));

  static class FileReference implements Reference {
    final File file;
    final String uri;
    FileReference(File file, String uri) { this.file = file; this.uri = uri; }
    public boolean doesBinaryExist() { return file.exists(); }
    public InputStream getStream() throws IOException { return new FileInputStream(file); }
    public String getURI() { return uri; }
    public String getLocalURI() { return file.getAbsolutePath(); }
    public boolean isReadOnly() { return true; }
    public OutputStream getOutputStream() { throw new UnsupportedOperationException(); }
    public void remove() {}
    public Reference[] probeAlternativeReferences() { return new Reference[0]; }
  }

  /** Resolves every jr:// reference to the file of that name in the media directory. */
  static class MediaDirectory implements ReferenceFactory {
    final File dir;
    MediaDirectory(File dir) { this.dir = dir; }
    public boolean derives(String uri) { return uri.startsWith("jr://"); }
    public Reference derive(String uri) {
      File file = new File(dir, uri.substring(uri.lastIndexOf('/') + 1));
      if (!file.exists()) errors.add("media file not found in " + dir + ": " + uri);
      return new FileReference(file, uri);
    }
    public Reference derive(String uri, String context) { return derive(uri); }
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: XFormCheck form.xml [media-dir]");
      System.exit(2);
    }
    File form = new File(args[0]);
    new XFormsModule().registerModule();
    PropertyManager.setPropertyManager(new org.opendatakit.validate.StubPropertyManager());
    ReferenceManager.instance().addReferenceFactory(args.length > 1
        ? new MediaDirectory(new File(args[1]))
        : new org.opendatakit.validate.StubReferenceFactory());

    FormDef definition;
    try (InputStream in = new FileInputStream(form)) {
      definition = XFormUtils.getFormFromInputStream(in);
    } catch (Throwable t) {
      System.out.println("INVALID: " + t);
      System.exit(1);
      return;
    }
    definition.getPreloader().addPreloadHandler(new IPreloadHandler() {
      public String preloadHandled() { return "property"; }
      public IAnswerData handlePreload(String property) { return new StringData(property); }
      public boolean handlePostProcess(TreeElement node, String params) { return false; }
    });
    try {
      definition.initialize(true, new InstanceInitializationFactory());
      FormEntryModel model = new FormEntryModel(definition);
      FormEntryController controller = new FormEntryController(model);
      Set<String> repeatsAdded = new HashSet<>();
      int event, steps = 0;
      while ((event = controller.stepToNextEvent()) != FormEntryController.EVENT_END_OF_FORM
          && steps++ < 10000) {
        if (event == FormEntryController.EVENT_PROMPT_NEW_REPEAT) {
          String repeat = model.getFormIndex().getReference().toString().replaceAll("\\[\\d+\\]", "");
          if (repeatsAdded.add(repeat)) controller.newRepeat();
        } else if (event == FormEntryController.EVENT_QUESTION) {
          FormEntryPrompt prompt = model.getQuestionPrompt();
          prompt.getQuestionText();
          prompt.getSelectChoices(); // evaluates itemsets, loading their CSV instances
        }
      }
    } catch (Throwable t) {
      System.out.println("INVALID (stepping through the form): " + t);
      System.exit(1);
      return;
    }

    DocumentBuilderFactory factory = DocumentBuilderFactory.newInstance();
    factory.setNamespaceAware(true);
    Document document = factory.newDocumentBuilder().parse(form);
    FormInstance main = definition.getMainInstance();
    EvaluationContext context = new EvaluationContext(main);
    NodeList binds = document.getElementsByTagNameNS("http://www.w3.org/2002/xforms", "bind");
    String[] expressions = {"calculate", "relevant", "constraint", "required", "readonly"};
    for (int i = 0; i < binds.getLength(); i++) {
      Element bind = (Element) binds.item(i);
      String nodeset = bind.getAttribute("nodeset");
      TreeReference reference = FormInstance.unpackReference(new XPathReference(nodeset));
      if (context.expandReference(reference, true).isEmpty())
        errors.add("<bind> nodeset is not in the main instance: " + nodeset);
      String type = bind.getAttribute("type").replaceFirst("^xsd:", "");
      if (!type.isEmpty() && !TYPES.contains(type))
        errors.add("bind " + nodeset + " has an unknown type: " + type);
      for (String attribute : expressions) {
        String expression = bind.getAttribute(attribute);
        if (expression.isEmpty()) continue;
        for (TreeReference trigger : new XPathConditional(expression).getTriggers(reference)) {
          if (trigger.getInstanceName() != null
              || trigger.getContextType() != TreeReference.CONTEXT_ABSOLUTE) continue;
          if (context.expandReference(trigger.genericize(), true).isEmpty())
            errors.add("bind " + nodeset + " @" + attribute + " names a missing node " + trigger);
        }
      }
    }
    if (!errors.isEmpty()) {
      errors.forEach(e -> System.out.println("INVALID: " + e));
      System.exit(1);
    }
    System.out.println("OK: " + definition.getTitle());
  }
}

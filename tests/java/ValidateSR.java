// Runs PixelMed's DicomSRValidator (com.pixelmed.validate.DicomSRValidator, the class behind the
// Debian `DicomSRValidator` command) over several files in one JVM, because building its XSLT
// translets costs tens of seconds per JVM start. Output per file: "=== <path>" then the
// validator's own report, unchanged.
// Run: java -Djdk.xml.xpathExprGrpLimit=0 -Djdk.xml.xpathExprOpLimit=0 -Djdk.xml.xpathTotalOpLimit=0 \
//        -cp /usr/share/java/pixelmed.jar ValidateSR.java FILE...
import com.pixelmed.validate.DicomSRValidator;

public class ValidateSR {
    public static void main(String[] args) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (String path : args) {
            System.out.println("=== " + path);
            System.out.println(validator.validate(path));
        }
    }
}
